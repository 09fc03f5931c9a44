//! What each verb patches, as upstream's plugin does.
