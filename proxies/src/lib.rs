//! # autoagent-proxies
//!
//! Zero-cost NAS proxies (synflow, NASWOT, jacob_cov, grad_norm, snip, grasp, fisher, zen, zico,
//! params, flops) behind one `Proxy` trait, and the small instrumentation trait networks implement
//! so that every proxy works on every search space. Built next (issue 3); this crate is an empty
//! member of the workspace until then.
