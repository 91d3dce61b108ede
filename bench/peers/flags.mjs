// Command-line flags of the peer scripts: every flag takes one value.
//
//   for (const [flag, value] of flagPairs(process.argv.slice(2))) ...
export function flagPairs(argv) {
  const pairs = [];
  for (let i = 0; i < argv.length; i += 2) {
    if (i + 1 >= argv.length) throw new Error(`${argv[i]} needs a value`);
    pairs.push([argv[i], argv[i + 1]]);
  }
  return pairs;
}
