"""The RL pruning controller: a small policy picks each image's pruning ratio per scale.

`state` (features, actions, FLOPs shares), `policy` (the network and its `Controller`),
`reward` (fidelity to the unpruned image minus a FLOPs cost), `trainer` (GRPO: rollouts of a
group of plans per condition and seed, and the learner), `checkpoint` (atomic save / load),
`frontier` (every method's fidelity vs FLOPs). The Ray side lives in `actors.controller` and
`actors.rl_train`. See docs/rl.md.
"""
