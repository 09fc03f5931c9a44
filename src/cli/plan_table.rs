//! `plan FILE`: the step table the controller would follow, computed by
//! running the controller's own planner on a simulated cluster.
