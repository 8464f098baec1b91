//! HTTPS plumbing shared by every role: the server loop with its limits ([`server`]) and a small
//! kept-alive client ([`client`]).

pub mod client;
pub mod server;
pub mod tls;

pub use client::{ClientError, ClientResponse, HttpClient, HttpVersion};
pub use server::{Handler, Limits, Peer, ServerHandle};

/// Raises this process's open-file limit to at least `want` where the system allows it (the
/// soft limit up to the hard one; the hard one too when the process is privileged), and
/// returns the soft limit now in force. A relay holding tens of thousands of agent connections
/// needs one descriptor each.
pub fn raise_open_file_limit(want: u64) -> u64 {
    use rlimit::Resource;
    let Ok((soft, hard)) = rlimit::getrlimit(Resource::NOFILE) else {
        return 0;
    };
    if soft >= want {
        return soft;
    }
    if hard < want && rlimit::setrlimit(Resource::NOFILE, want, want).is_ok() {
        return want;
    }
    let to = want.min(hard);
    match rlimit::setrlimit(Resource::NOFILE, to, hard) {
        Ok(()) => to,
        Err(_) => soft,
    }
}
