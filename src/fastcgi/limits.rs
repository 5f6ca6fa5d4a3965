//! The limits one FastCGI connection enforces and advertises: how much PARAMS and STDIN a
//! request may send, and what GET_VALUES answers.

/// Limits for one connection, set from the pool's config by the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest PARAMS stream (all CGI headers of one request, with their length bytes). Beyond
    /// it the request gets `431` and the connection closes: without a cap, a peer could make
    /// the worker buffer an endless stream. Default 1 MiB.
    pub max_params_bytes: usize,
    /// Largest request body (STDIN stream). Beyond it the request gets `413`; a CONTENT_LENGTH
    /// above it is refused before the body is read. Default 128 MiB.
    pub max_body_bytes: usize,
    /// `FCGI_MAX_CONNS` in GET_VALUES_RESULT: how many connections the pool accepts at once,
    /// so that a web server can size its keep-alive pool. Default 1.
    pub max_conns: u32,
    /// `FCGI_MAX_REQS` in GET_VALUES_RESULT: how many requests the pool runs at once.
    /// Default 1.
    pub max_reqs: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_params_bytes: 1024 * 1024,
            max_body_bytes: 128 * 1024 * 1024,
            max_conns: 1,
            max_reqs: 1,
        }
    }
}
