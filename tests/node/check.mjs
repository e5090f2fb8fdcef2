// Verifies deliveries with Node's receivers, for tests/receiving/test_node_verifiers.py.
// stdin: {"modules": {"<package>": "<path of README's receiver module importing it>"},
//         "deliveries": [{"body": "...", "headers": {...}, "url": "...", "key": "..."}]}
// stdout: per delivery, whether each way of verifying accepted it.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import * as standardwebhooks from "standardwebhooks";
import * as svix from "svix";

const input = JSON.parse(readFileSync(0, "utf8"));
const packages = { standardwebhooks, svix };
const readme = {};
for (const [name, path] of Object.entries(input.modules)) {
  readme[name] = await import(pathToFileURL(path).href);
}

function accepts(verify) {
  try {
    verify();
    return true;
  } catch {
    return false;
  }
}

const results = input.deliveries.map(({ body, headers, url, key }) => {
  const result = { readme: {}, readmeBird: {}, ways: {} };
  for (const [name, module] of Object.entries(readme)) {
    result.readme[name] = accepts(() => module.receive(body, headers));
    result.readmeBird[name] = module.birdVerifies(body, headers, url);
  }
  for (const [name, { Webhook }] of Object.entries(packages)) {
    const bytes = new TextEncoder().encode(key);
    result.ways[`${name}: UTF-8 bytes, raw`] = accepts(() =>
      new Webhook(bytes, { format: "raw" }).verify(body, headers),
    );
    result.ways[`${name}: string, raw`] = accepts(() =>
      new Webhook(key, { format: "raw" }).verify(body, headers),
    );
    result.ways[`${name}: string`] = accepts(() => new Webhook(key).verify(body, headers));
  }
  return result;
});
console.log(JSON.stringify(results));
