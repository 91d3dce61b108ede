"""kiln: an inference compiler for ONNX models with a first-class engine cache.

    import kiln
    model = kiln.compile("resnet18.onnx",
                         inputs=[kiln.Input(min_shape=(1, 3, 224, 224), opt_shape=(8, 3, 224, 224),
                                            max_shape=(16, 3, 224, 224))],
                         engine_cache_dir="/tmp/kiln_cache")
    logits = model(images)          # numpy in, numpy out (torch in, torch out)
    model.engines()                 # [{"key": ..., "status": "hit", ...}]

Pure Python over libkiln's C API (include/kiln/kiln.h) with ctypes. The
library is found through $KILN_LIBRARY, then next to this package, then the
build folder of a source checkout, then the system's loader path.
"""

from ._core import (  # noqa: F401
    BaseEngineCache,
    CompiledModel,
    Error,
    FileError,
    Input,
    InternalError,
    InvalidArgumentError,
    InvalidModelError,
    RAMEngineCache,
    UnsupportedError,
    compile,
    load,
    setting_names,
    zoo_model,
)
from ._lib import lib as _lib

__version__ = _lib.kiln_version().decode()
abi_version = _lib.kiln_abi_version()

# torch.compile(backend="kiln") on torch >= 2, when torch is already loaded
# (importing torch here would slow every `import kiln`).
import sys as _sys

if "torch" in _sys.modules:
    from . import torch as _kiln_torch  # noqa: F401
