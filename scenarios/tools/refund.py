"""The refund_order tool of scenarios/support.yaml: the arguments arrive as JSON on stdin,
the result goes to stdout as JSON."""
import json
import sys

args = json.load(sys.stdin)
print(json.dumps({"order_id": args["order_id"], "status": "refunded", "amount_usd": 42.0}))
