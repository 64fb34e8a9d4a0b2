"""Graph passes, one per file, run in this order on the Dynamo FX graph:
find_linears -> collect_stats -> plan_layers -> pack_weights -> rewrite_linears.
Each reads and writes `node.meta["sparc"]`, one frozen `LinearSite` per linear."""
