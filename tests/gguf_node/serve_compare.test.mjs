// bench/compare_serve.sh end to end on the tiny random shape: `metharme serve` and llama.cpp
// (node-llama-cpp's multi-sequence context, bench/llamacpp_parallel.mjs) each serve 1 and 3
// parallel streams of exactly 5 tokens, and the script's table compares them. Checks that every
// round of both engines delivered every token of every stream and that the table has a row per
// stream count with both engines' rates. Skips when node-llama-cpp is not installed.
import {test} from "node:test";
import assert from "node:assert/strict";
import {spawnSync} from "node:child_process";
import {existsSync, mkdtempSync, readFileSync, rmSync} from "node:fs";
import {tmpdir} from "node:os";
import {dirname, join} from "node:path";
import {fileURLToPath} from "node:url";

const BIN = process.env.METHARME_BIN;
const SHARED = process.env.METHARME_SHARED;
const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = join(HERE, "..", "..");
const haveNlc = existsSync(join(HERE, "node_modules", "node-llama-cpp", "package.json"));
if (!haveNlc) console.log("SKIP: node-llama-cpp is not installed (run tests/gguf_node/run.sh --install)");

test("compare_serve.sh measures both engines on parallel streams", {skip: !haveNlc || !BIN || !SHARED}, () => {
  const work = mkdtempSync(join(tmpdir(), "metharme-serve-compare-"));
  try {
    const r = spawnSync(join(REPO, "bench", "compare_serve.sh"),
      ["--shape", "tiny", "--streams", "1,3", "--tokens", "5", "--threads", "1", "--rounds", "2", "--work", work,
        "--bin", BIN, "--nlc", HERE],
      {encoding: "utf8", timeout: 240000,
        env: {...process.env, METHARME_TOKENIZER: join(SHARED, "fixtures/tokenizer/llama/tokenizer.model")}});
    assert.equal(r.status, 0, `exit ${r.status}\n${r.stderr}\n${r.stdout}`);
    const results = /results go to (\S+)/.exec(r.stderr)?.[1];
    assert.ok(results, r.stderr);
    const rows = readFileSync(results, "utf8").trim().split("\n").map((l) => JSON.parse(l));
    // 2 rounds x 2 stream counts x 2 engines, every stream exactly 5 tokens.
    assert.equal(rows.length, 8);
    for (const engine of ["metharme", "llama.cpp"])
      for (const n of [1, 3]) {
        const mine = rows.filter((x) => x.engine === engine && x.n === n);
        assert.equal(mine.length, 2, `${engine} n=${n}`);
        for (const x of mine) {
          assert.equal(x.total, 5 * n, `${engine} n=${n} tokens`);
          assert.ok(x.agg > 0 && x.wall > 0, `${engine} n=${n} rate`);
        }
      }
    const table = r.stdout.split("\n").filter((l) => /^\| [13] \|/.test(l));
    assert.equal(table.length, 2, r.stdout);
    for (const line of table) {
      const cells = line.split("|").map((c) => c.trim());
      // | n | metharme [range] | vs 1 | llama.cpp [range] | vs 1 | ratio |
      assert.ok(parseFloat(cells[2]) > 0 && parseFloat(cells[4]) > 0 && /x$/.test(cells[6]), line);
    }
  } finally {
    rmSync(work, {recursive: true, force: true});
  }
});
