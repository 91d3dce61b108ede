# `cmake --install build --prefix P`: the CLI, every kiln library, the
# headers, a CMake package (find_package(kiln) -> kiln::kiln, the C API) and
# a pkg-config file (kiln.pc, the C API). The installed tree is relocatable:
# libraries find each other through $ORIGIN, the CLI through $ORIGIN/../lib.
# The C++ API's headers are installed for reference; the package exports the
# C API only, whose one library hides every other kiln type.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

get_property(kiln_libraries GLOBAL PROPERTY KILN_LAYERS)  # every kiln_layer(), in order
foreach(library ${kiln_libraries})
  if(TARGET ${library})
    # A build RUNPATH entry (even for a layer that needs none) is what CMake
    # rewrites into the install one.
    set_target_properties(${library} PROPERTIES BUILD_RPATH "$ORIGIN" INSTALL_RPATH "$ORIGIN")
    install(TARGETS ${library} LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
  endif()
endforeach()

set_target_properties(kiln PROPERTIES INSTALL_RPATH "$ORIGIN/../${CMAKE_INSTALL_LIBDIR}")
install(TARGETS kiln RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

install(DIRECTORY include/kiln DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} FILES_MATCHING PATTERN "*.hpp" PATTERN "*.h")
install(FILES ${KILN_GENERATED_DIR}/kiln/version.hpp DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/kiln)

if(TARGET kiln_capi)
  set_target_properties(kiln_capi PROPERTIES INSTALL_RPATH "$ORIGIN")
  install(TARGETS kiln_capi LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
  # The package is written by hand rather than with install(EXPORT): an
  # exported kiln_capi would drag the layers (and their own dependencies)
  # into the consumer's link, while libkiln finds them through its RUNPATH.
  set(kiln_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/kiln)
  configure_file(cmake/kilnConfig.cmake.in ${PROJECT_BINARY_DIR}/kilnConfig.cmake @ONLY)
  write_basic_package_version_file(${PROJECT_BINARY_DIR}/kilnConfigVersion.cmake
                                   COMPATIBILITY SameMajorVersion)
  install(FILES ${PROJECT_BINARY_DIR}/kilnConfig.cmake ${PROJECT_BINARY_DIR}/kilnConfigVersion.cmake
          DESTINATION ${kiln_cmake_dir})
  configure_file(cmake/kiln.pc.in ${PROJECT_BINARY_DIR}/kiln.pc @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/kiln.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endif()
