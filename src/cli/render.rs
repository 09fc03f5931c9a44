//! Output of `get rollout` (header and tree) and `list rollouts`.
