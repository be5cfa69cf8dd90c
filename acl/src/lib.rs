//! ACL, QoS and session tables (issue 4): not written yet.
#![forbid(unsafe_code)]
