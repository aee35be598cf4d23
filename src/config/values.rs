//! Checks of single values: addresses, URLs, recipients, approvers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use url::Url;

/// `<public_url>/<path>`, keeping any path prefix of `public_url`.
pub(super) fn callback_url(public_url: &Url, path: &str) -> Url {
    let mut base = public_url.clone();
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    // Joining a plain relative segment onto an http(s) base cannot fail.
    base.join(path).unwrap_or(base)
}

pub(super) fn parse_http_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("is not a valid URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "has scheme {:?}; only http and https are supported",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".to_owned());
    }
    Ok(url)
}

/// Accepts `host:port` with a non-empty host (IPv6 in brackets) and a valid port.
pub(super) fn check_host_port(addr: &str) -> Option<String> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Some("has no port; use host:port, e.g. teleport.example.com:3025".to_owned());
    };
    if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
        return Some("has no valid host; use host:port, e.g. teleport.example.com:3025".to_owned());
    }
    if port.parse::<u16>().map_or(true, |p| p == 0) {
        return Some(format!(
            "has an invalid port {port:?}; use host:port, e.g. teleport.example.com:3025"
        ));
    }
    None
}

/// `[ip]:port`; an empty host (":8081", as Teleport's plugin writes it) means all IPv4
/// interfaces, and `localhost` means 127.0.0.1.
pub(super) fn parse_listen_addr(text: &str) -> Option<SocketAddr> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr);
    }
    let (host, port) = text.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let ip = match host {
        "" | "*" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// A recipient is a user's email or `team/channel` URL names.
pub(super) fn check_recipient(r: &str) -> Option<String> {
    if r.contains('@') {
        let (local, domain) = r.split_once('@')?;
        if local.is_empty() || domain.is_empty() || r.contains(char::is_whitespace) {
            return Some("is not a valid email; use e.g. first.last@example.com".to_owned());
        }
        return None;
    }
    match r.split_once('/') {
        Some((team, channel))
            if !team.is_empty() && !channel.is_empty() && !channel.contains('/') =>
        {
            None
        }
        _ => Some(
            "is neither an email nor \"team/channel\"; use e.g. \"my-team/security\" or \"first.last@example.com\""
                .to_owned(),
        ),
    }
}

/// An approver channel is `team/channel`, by URL names.
pub(super) fn check_channel(c: &str) -> Option<String> {
    let url_name = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    };
    match c.split_once('/') {
        Some((team, channel)) if url_name(team) && url_name(channel) => None,
        _ => Some(
            "is not \"team/channel\" with URL names (lowercase letters, digits, - and _); use e.g. \"security/access-approvers\""
                .to_owned(),
        ),
    }
}

/// An approver is a Mattermost username (optionally with `@`) or an email.
pub(super) fn check_approver(a: &str) -> Option<String> {
    if a.contains(char::is_whitespace) || a == "@" {
        return Some(
            "is not a Mattermost username or email; use e.g. \"alice\" or \"alice@example.com\""
                .to_owned(),
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ACTION_PATH;

    #[test]
    fn listen_addr_forms() {
        assert_eq!(
            parse_listen_addr(":8081"),
            Some("0.0.0.0:8081".parse().unwrap())
        );
        assert_eq!(
            parse_listen_addr("127.0.0.1:9000"),
            Some("127.0.0.1:9000".parse().unwrap())
        );
        assert_eq!(
            parse_listen_addr("[::]:8081"),
            Some("[::]:8081".parse().unwrap())
        );
        assert_eq!(
            parse_listen_addr("localhost:1"),
            Some("127.0.0.1:1".parse().unwrap())
        );
        assert_eq!(parse_listen_addr("8081"), None);
        assert_eq!(parse_listen_addr("example.com:8081"), None);
    }

    #[test]
    fn action_url_keeps_path_prefix() {
        let u = Url::parse("https://example.com").unwrap();
        assert_eq!(
            callback_url(&u, ACTION_PATH).as_str(),
            "https://example.com/mattermost_action"
        );
        let u = Url::parse("https://example.com/teleport").unwrap();
        assert_eq!(
            callback_url(&u, ACTION_PATH).as_str(),
            "https://example.com/teleport/mattermost_action"
        );
    }

    #[test]
    fn host_port_checks() {
        assert!(check_host_port("example.com:3025").is_none());
        assert!(check_host_port("[::1]:3025").is_none());
        assert!(check_host_port("example.com").is_some());
        assert!(check_host_port(":3025").is_some());
        assert!(check_host_port("example.com:99999").is_some());
    }

    #[test]
    fn recipient_checks() {
        assert!(check_recipient("a@example.com").is_none());
        assert!(check_recipient("team/channel").is_none());
        assert!(check_recipient("team").is_some());
        assert!(check_recipient("a/b/c").is_some());
        assert!(check_recipient("@example.com").is_some());
    }
}
