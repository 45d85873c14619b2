"""Real OPA (through the opa_bindings Go library) for keycard's differential
test and speed comparison. Run by tests/opa_differential.rs with the Python
of KEYCARD_TEST_PYTHON; talks JSON lines, one request per line on stdin, one
reply per line on stdout, in order.

Requests:
  {"op": "load", "modules": {"path": "rego text", ...}, "data": {...},
   "packages": ["keycard.zt.privileged", ...]}
      A fresh engine with these modules and this data document. The query
      evaluated afterwards is one object binding every package's deny set:
      r := {"pkg": data.pkg.deny, ...}.
      Reply: {"ok": true, "opa_version": "..."} or {"error": "..."}.
  {"op": "eval", "input": {...}}
      Reply: {"deny": {"pkg": [finding, ...], ...}} or {"error": "..."}.
  {"op": "time", "inputs": [{...}, ...], "rounds": R}
      Evaluates every input R times through the same query, and R times
      through a trivial policy (allow := true) with the same input, so the
      cost of the Python and JSON path can be told apart from OPA's own.
      Reply: {"query_us": [median per round], "trivial_us": [...]} as
      microseconds per input.
"""

import json
import statistics
import sys
import time

from opa_bindings import OpaEngine, OpaError


def query_for(packages):
    fields = ", ".join(f"{json.dumps(p)}: data.{p}.deny" for p in packages)
    return "r := {" + fields + "}"


def main():
    engine = None
    query = None
    trivial = OpaEngine()
    trivial.add_policy("trivial.rego", "package trivial\n\nallow := true\n")
    out = sys.stdout
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        req = json.loads(line)
        op = req.get("op")
        try:
            if op == "load":
                if engine is not None:
                    engine.close()
                engine = OpaEngine()
                for path, text in req["modules"].items():
                    engine.add_policy(path, text)
                if req.get("data"):
                    engine.add_data(req["data"])
                query = query_for(req["packages"])
                # Prepare the query once so that compile errors surface here.
                engine.eval_query(query, {})
                version = engine.eval_query("v := opa.runtime().version")
                reply = {"ok": True, "opa_version": version[0]["v"] if version else None}
            elif op == "eval":
                rs = engine.eval_query(query, req["input"])
                reply = {"deny": rs[0]["r"]} if rs else {"error": "query undefined"}
            elif op == "time":
                inputs = req["inputs"]
                rounds = int(req.get("rounds", 5))
                query_us, trivial_us = [], []
                for _ in range(rounds):
                    t = time.perf_counter()
                    for i in inputs:
                        engine.eval_query(query, i)
                    query_us.append((time.perf_counter() - t) * 1e6 / len(inputs))
                    t = time.perf_counter()
                    for i in inputs:
                        trivial.eval_query("x := data.trivial.allow", i)
                    trivial_us.append((time.perf_counter() - t) * 1e6 / len(inputs))
                reply = {
                    "query_us": query_us,
                    "trivial_us": trivial_us,
                    "query_median_us": statistics.median(query_us),
                    "trivial_median_us": statistics.median(trivial_us),
                }
            else:
                reply = {"error": f"unknown op {op!r}"}
        except (OpaError, KeyError, TypeError, AttributeError) as e:
            reply = {"error": str(e)}
        out.write(json.dumps(reply))
        out.write("\n")
    out.flush()


if __name__ == "__main__":
    main()
