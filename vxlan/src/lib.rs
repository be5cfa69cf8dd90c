//! VXLAN encap/decap and VTEP tables (issue 5): not written yet.
#![forbid(unsafe_code)]
