//! The distribution client: pull and push images from and to any OCI registry.
//!
//! [`Client`] speaks the distribution spec over HTTPS (HTTP for localhost, 127.0.0.0/8 and
//! registries marked insecure, as docker allows), authenticates as docker does (anonymous
//! or credentialed bearer tokens from the `WWW-Authenticate` challenge, or basic auth, with
//! credentials from docker's `config.json`), and retries with backoff when a server fails
//! or a connection drops. [`pull`] and [`push`] move images between a registry and the
//! local [`ImageStore`](crate::store::ImageStore), reporting to a [`Progress`].
//! [`Remote`] reads one upstream for the registry's pull-through mirror.
//! [`Downloader`] fetches plain URLs (the builder's `ADD <url>`) with timeouts and retries.

pub mod credentials;
mod download;
mod progress;
mod pull;
mod push;
mod remote;
mod transport;

pub use download::{DownloadOptions, Downloader};
pub use progress::{Event, NoProgress, Progress};
pub use pull::{fetch_blobs, fetch_document, has_blob, pull, PullOptions, Pulled};
pub use push::{push, push_blobs, ManifestFormat, PushOptions};
pub use remote::{Remote, RemoteBlob, RemoteManifest};
pub use transport::{Client, ClientOptions};

/// The host to talk to for a reference's domain: Docker Hub's API lives elsewhere.
pub fn registry_host(domain: &str) -> &str {
    match domain {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        d => d,
    }
}

/// True for hosts docker talks plain HTTP to without being told: localhost and 127.0.0.0/8.
pub fn is_loopback(host: &str) -> bool {
    let h = host.rsplit_once(':').filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h);
    let h = h.trim_start_matches('[').trim_end_matches(']');
    h == "localhost" || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in ["localhost", "localhost:5000", "127.0.0.1:5000", "127.3.4.5", "[::1]:5000"] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["ghcr.io", "10.0.0.1:5000", "registry.local"] {
            assert!(!is_loopback(h), "{h}");
        }
        assert_eq!(registry_host("docker.io"), "registry-1.docker.io");
    }
}
