//! Reading a config laid out as the seed document shows it: keys at the top of the file,
//! outside their sections.

use toml::{Table, Value};

/// The keys of [teleport].
pub(super) const TELEPORT_KEYS: &[&str] = &[
    "addr",
    "auth_server",
    "client_key",
    "client_crt",
    "root_cas",
    "identity",
    "refresh_identity",
    "refresh_identity_interval",
    "connection",
    "ca_file",
    "plugin_name",
    "timezone",
];
/// The keys of [mattermost].
pub(super) const MATTERMOST_KEYS: &[&str] = &[
    "url",
    "team",
    "channel",
    "token",
    "secret",
    "recipients",
    "role_to_recipients",
    "approvers",
    "approver_channels",
    "max_suggested_reviewers",
    "rate_limit_per_second",
    "rate_limit_burst",
    "ca_file",
    "priority",
    "requested_ack",
];
/// The keys of [http].
pub(super) const HTTP_KEYS: &[&str] = &[
    "public_addr",
    "listen_addr",
    "https_key_file",
    "https_cert_file",
    "deny_reason",
    "approve_reason",
];
/// The keys of [log].
pub(super) const LOG_KEYS: &[&str] = &["output", "severity", "format"];
/// The keys of [requester].
pub(super) const REQUESTER_KEYS: &[&str] = &["lookup", "notify_on_post"];
/// The keys of [reminders].
pub(super) const REMINDER_KEYS: &[&str] = &["after", "every", "max"];

/// The sections and their keys.
pub(super) const SECTIONS: [(&str, &[&str]); 6] = [
    ("teleport", TELEPORT_KEYS),
    ("mattermost", MATTERMOST_KEYS),
    ("http", HTTP_KEYS),
    ("log", LOG_KEYS),
    ("requester", REQUESTER_KEYS),
    ("reminders", REMINDER_KEYS),
];

/// Moves keys written at the top of the file, the way the seed document's example shows them,
/// into the one section they belong to. Returns what was moved, as warnings that say how to
/// rewrite the file; a key that belongs to several sections (`ca_file`) is left for the
/// "unknown key" problem to name.
pub(super) fn sectioned(root: &mut Table) -> Vec<String> {
    let loose: Vec<String> = root
        .iter()
        .filter(|(k, v)| !v.is_table() && SECTIONS.iter().all(|(name, _)| name != k))
        .map(|(k, _)| k.clone())
        .collect();
    let mut moved = Vec::new();
    for key in loose {
        let homes: Vec<&str> = SECTIONS
            .iter()
            .filter(|(_, keys)| keys.contains(&key.as_str()))
            .map(|(name, _)| *name)
            .collect();
        let [home] = homes[..] else { continue };
        let section = root
            .entry(home)
            .or_insert_with(|| Value::Table(Table::new()));
        let Some(table) = section.as_table_mut() else {
            continue;
        };
        if table.contains_key(&key) {
            continue; // set in both places: reported as an unknown top-level key
        }
        let value = root.remove(&key).expect("listed above");
        root[home]
            .as_table_mut()
            .expect("a table")
            .insert(key.clone(), value);
        moved.push(format!(
            "{key} is read as {home}.{key}: move it under [{home}]"
        ));
    }
    if !moved.is_empty() {
        moved.push(
            "the config has keys outside their sections; `teleport-mattermost configure` prints the sectioned layout".into(),
        );
    }
    moved
}
