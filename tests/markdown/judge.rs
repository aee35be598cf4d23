//! Mattermost's own markdown parsers as the judge of what a post shows (`check.mjs` beside
//! this file; README.md says which parser is whose), and the rules a post must keep when it
//! carries text a person wrote.
//!
//! Shared by `tests/markdown_corpus.rs` and `tests/real_mattermost_markdown.rs`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::{Value, json};

/// `tests/markdown`.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/markdown")
}

/// `Ok` once `node` and `npm` run and the parsers are installed (`npm ci` the first time);
/// `Err` with the one `skipped:` line to print when node or npm is missing. A failing
/// `npm ci` panics: the registry is reachable wherever these tests run.
pub fn ready() -> Result<(), String> {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    READY
        .get_or_init(|| {
            for tool in ["node", "npm"] {
                let ran = Command::new(tool)
                    .arg("--version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                if !ran.is_ok_and(|s| s.success()) {
                    return Err(format!(
                        "skipped: `{tool}` not found; Mattermost's markdown parsers run on Node.js"
                    ));
                }
            }
            if !dir().join("node_modules/@mattermost/commonmark").is_dir() {
                let out = Command::new("npm")
                    .args([
                        "ci",
                        "--prefer-offline",
                        "--no-audit",
                        "--no-fund",
                        "--prefix",
                    ])
                    .arg(dir())
                    .output()
                    .expect("run npm ci");
                assert!(
                    out.status.success(),
                    "npm ci --prefix tests/markdown failed:\n{}\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(())
        })
        .clone()
}

/// The Mattermost server's own markdown package (`server/main.go` beside this file, on
/// `github.com/mattermost/mattermost-server/v6` v6.7.2), built once into `target/` in a
/// throwaway wrapper module; `Err` with a `skipped:` line when `go` is missing.
pub fn server_judge() -> Result<PathBuf, String> {
    // The module's checksums, so the build needs no checksum database.
    const GO_SUM: &str = "\
github.com/mattermost/mattermost-server/v6 v6.7.2 h1:rRss2/R5LNbyc/P1OA4kSWuVq+rmnxwepuwGpTwL+U4=
github.com/mattermost/mattermost-server/v6 v6.7.2/go.mod h1:b/iDf7Jn2Pd2jWGzaznoVNT811JZpemdmNGP7M/a7Ao=
";
    const GO_MOD: &str = "module tm-markdown-judge\n\ngo 1.24\n\nrequire github.com/mattermost/mattermost-server/v6 v6.7.2\n";
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let go = Command::new("go")
                .arg("version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if !go.is_ok_and(|s| s.success()) {
                return Err(
                    "skipped: `go` not found; the Mattermost server's own parser is not run"
                        .to_string(),
                );
            }
            let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("markdown-server-judge");
            std::fs::create_dir_all(&work).expect("create the judge's module");
            std::fs::write(work.join("go.mod"), GO_MOD).expect("go.mod");
            std::fs::write(work.join("go.sum"), GO_SUM).expect("go.sum");
            std::fs::copy(dir().join("server/main.go"), work.join("main.go")).expect("main.go");
            let out = Command::new("go")
                .args([
                    "build",
                    "-mod=readonly",
                    "-buildvcs=false",
                    "-o",
                    "server-judge",
                    ".",
                ])
                .current_dir(&work)
                .output()
                .expect("run go build");
            assert!(
                out.status.success(),
                "building tests/markdown/server failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(work.join("server-judge"))
        })
        .clone()
}

/// One post for the parsers.
#[derive(Clone, Debug)]
pub struct Post {
    pub name: String,
    pub message: String,
}

/// Runs `check.mjs`, and the server's parser where `go` is found, on `posts`; returns, per
/// post in order, `{PARSER: TREE}` (see check.mjs).
pub fn parse(posts: &[Post]) -> Vec<BTreeMap<String, Value>> {
    let mut trees = run_judge(
        Command::new("node").arg(dir().join("check.mjs")).arg("-"),
        posts,
    );
    match server_judge() {
        Ok(judge) => {
            for (mine, server) in trees
                .iter_mut()
                .zip(run_judge(&mut Command::new(judge), posts))
            {
                mine.extend(server);
            }
        }
        Err(skip) => {
            static SAID: OnceLock<()> = OnceLock::new();
            SAID.get_or_init(|| {
                let _ = writeln!(std::io::stderr(), "{skip}");
            });
        }
    }
    trees
}

/// Runs one judge: posts as JSON on its standard input, trees on its standard output.
fn run_judge(command: &mut Command, posts: &[Post]) -> Vec<BTreeMap<String, Value>> {
    let input: Vec<Value> = posts
        .iter()
        .map(|p| json!({"name": p.name, "message": p.message}))
        .collect();
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {command:?}: {e}"));
    let body = serde_json::to_vec(&input).expect("posts as JSON");
    // To look at one post by hand: `node tests/markdown/check.mjs FILE`.
    if let Some(file) = std::env::var_os("TM_MARKDOWN_POSTS") {
        std::fs::write(file, &body).expect("write TM_MARKDOWN_POSTS");
    }
    let mut stdin = child.stdin.take().expect("stdin");
    // Write from a thread: node answers only after reading everything, and a big corpus
    // would fill both pipes.
    let writer = std::thread::spawn(move || stdin.write_all(&body));
    let out = child.wait_with_output().expect("check.mjs output");
    writer.join().expect("writer").expect("write posts");
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).expect("the judge's JSON");
    assert_eq!(results.len(), posts.len());
    results
        .into_iter()
        .map(|r| {
            r["parsers"]
                .as_object()
                .expect("parsers")
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .collect()
}

/// What the plugin itself puts in a post, against which a hostile rendering is judged.
pub struct Expect<'a> {
    /// Link destinations the plugin adds (the web UI link).
    pub allowed_links: &'a [String],
    /// Status lines the post has (1 for a request's post, 0 for replies and DMs).
    pub status_lines: usize,
}

/// The problems a parser found in one post, each `kind: detail`; empty when the post keeps
/// every rule. `tree` is the post carrying the payload; `benign`, the same post carrying a
/// harmless text in the same place (parsed by the same parser); `payload`, the text.
pub fn problems(tree: &Value, benign: &Value, payload: &str, expect: &Expect) -> Vec<String> {
    let mut found = Vec::new();
    if let Some(e) = tree.get("error") {
        found.push(format!(
            "error: {}",
            first_line(e.as_str().unwrap_or_default())
        ));
        return found;
    }
    let strings = |v: &Value, key: &str| -> Vec<String> {
        v[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| match x {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    for link in tree["links"].as_array().into_iter().flatten() {
        let dest = link["dest"].as_str().unwrap_or_default();
        if !expect.allowed_links.iter().any(|a| a == dest) {
            found.push(format!("link: {}", short(dest)));
        }
    }
    for image in tree["images"].as_array().into_iter().flatten() {
        found.push(format!(
            "image: {}",
            short(image["dest"].as_str().unwrap_or_default())
        ));
    }
    for (key, kind) in [
        ("html", "html"),
        ("headings", "heading"),
        ("block_quotes", "quote"),
        ("lists", "list"),
        ("tables", "table"),
    ] {
        for text in strings(tree, key) {
            found.push(format!("{kind}: {}", short(&text)));
        }
    }
    let status = strings(tree, "status_lines");
    if status.len() != expect.status_lines {
        found.push(format!(
            "status: {} status lines {:?}",
            status.len(),
            status.iter().map(|s| short(s)).collect::<Vec<_>>()
        ));
    } else if status != strings(benign, "status_lines") {
        found.push(format!("status: changed to {:?}", status));
    }
    let mentions = strings(tree, "mentions");
    for m in &mentions {
        let lower = m.to_lowercase();
        if ["@channel", "@all", "@here"].contains(&lower.as_str()) {
            found.push(format!("mention: {m}"));
        }
    }
    let extra = |key: &str| -> Vec<String> {
        let mut allowed = strings(benign, key);
        let mut more = Vec::new();
        for x in strings(tree, key) {
            match allowed.iter().position(|a| *a == x) {
                Some(i) => {
                    allowed.remove(i);
                }
                None => more.push(x),
            }
        }
        more
    };
    for m in extra("mentions") {
        let lower = m.to_lowercase();
        if !["@channel", "@all", "@here"].contains(&lower.as_str()) {
            found.push(format!("mention: {m}"));
        }
    }
    for m in extra("at_mentions") {
        found.push(format!("at_mention: @{m}"));
    }
    for c in extra("channel_links") {
        found.push(format!("channel_link: ~{c}"));
    }
    for h in extra("hashtags") {
        found.push(format!("hashtag: #{h}"));
    }
    for u in extra("url_like") {
        found.push(format!("url_text: {}", short(&u)));
    }
    // A name too long for its list is not shown at all: the plugin says `(and 1 more)`
    // instead. Then the post has one code span less, and only its text outside code can
    // be compared.
    let capped = more_marks(tree) > more_marks(benign);
    let (mine, theirs) = if capped {
        (text_only(&skeleton(tree)), text_only(&skeleton(benign)))
    } else {
        (skeleton(tree), skeleton(benign))
    };
    if mine != theirs {
        let at = mine
            .iter()
            .zip(&theirs)
            .position(|(a, b)| a != b)
            .unwrap_or(mine.len().min(theirs.len()));
        let (a, b) = differing(
            mine.get(at).map(String::as_str).unwrap_or("(end)"),
            theirs.get(at).map(String::as_str).unwrap_or("(end)"),
        );
        found.push(format!(
            "escaped: outside code, {a:?} where a harmless text gives {b:?}"
        ));
    }
    if !capped && !in_code(tree, payload) {
        found.push("missing: the text is in no code node".to_string());
    }
    found
}

/// The plugin's own mark for a list cut short: `(and 3 more)`.
fn more() -> &'static regex::Regex {
    static MORE: OnceLock<regex::Regex> = OnceLock::new();
    MORE.get_or_init(|| regex::Regex::new(r"\(and \d+ more\)").expect("regex"))
}

/// The document outside code, without the plugin's own placeholders for cut, capped or
/// empty text, nor the paragraphs that held only those.
fn skeleton(tree: &Value) -> Vec<String> {
    let tokens: Vec<String> = tree["skeleton"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str())
        .map(|t| {
            // " (truncated)" sits in a label ("**Reason** (truncated):"), "(empty)" after one.
            let t = t
                .replace(" (truncated)", "")
                .replace("(truncated)", "")
                .replace("(empty)", "");
            more().replace_all(&t, "").into_owned()
        })
        .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|t| !t.is_empty())
        .collect();
    let mut out: Vec<String> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i] == "paragraph" {
            match tokens.get(i + 1).map(String::as_str) {
                Some("/paragraph") => {
                    i += 2;
                    continue;
                }
                None | Some("paragraph") => {
                    i += 1;
                    continue;
                }
                _ => {}
            }
        }
        out.push(tokens[i].clone());
        i += 1;
    }
    out
}

/// How many `(and N more)` marks the document has outside code.
fn more_marks(tree: &Value) -> usize {
    tree["skeleton"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str())
        .map(|t| more().find_iter(t).count())
        .sum()
}

/// The text of a skeleton outside code, without whitespace and structure: what a reader
/// reads around the code.
fn text_only(skeleton: &[String]) -> Vec<String> {
    const STRUCTURE: [&str; 4] = ["code_span", "code_block", "paragraph", "/paragraph"];
    vec![
        skeleton
            .iter()
            .filter(|t| !STRUCTURE.contains(&t.as_str()))
            .flat_map(|t| t.chars().filter(|c| !c.is_whitespace()))
            .collect(),
    ]
}

/// Whether the first letters and digits of `payload` are found, in order, in the post's
/// code nodes (marks the renderer inserts, like U+FEFF after backticks, are ignored).
fn in_code(tree: &Value, payload: &str) -> bool {
    // Only the start: a long text is cut, and what survives the cut is at least this much.
    let mut bytes = 0;
    let key: String = payload
        .chars()
        .take_while(|c| {
            bytes += c.len_utf8();
            bytes <= 200
        })
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect();
    // Too short a key would be found anywhere (the plugin's own code spans hold words too).
    if key.len() < 4 {
        return true;
    }
    let code: String = tree["code"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["text"].as_str())
        .flat_map(|t| t.chars())
        .filter(char::is_ascii_alphanumeric)
        .collect();
    code.contains(&key)
}

/// The two texts from a little before where they first differ, shortened.
fn differing(a: &str, b: &str) -> (String, String) {
    let same = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
    let from = same.saturating_sub(12);
    let cut = |s: &str| {
        let rest: String = s.chars().skip(from).collect();
        let prefix = if from > 0 { "…" } else { "" };
        format!("{prefix}{}", short(&rest))
    };
    (cut(a), cut(b))
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

/// At most 60 characters, escaped for one line.
pub fn short(s: &str) -> String {
    let escaped: String = s.escape_debug().collect();
    if escaped.chars().count() > 60 {
        format!("{}…", escaped.chars().take(60).collect::<String>())
    } else {
        escaped
    }
}

/// Short names of the parsers, for tables.
pub fn parser_tag(parser: &str) -> &'static str {
    if parser.starts_with("@mattermost/commonmark") {
        "commonmark"
    } else if parser.contains("0.3.6") {
        "marked-0.3.6"
    } else if parser.contains("0.7.0") {
        "marked-0.7.0"
    } else if parser.starts_with("mattermost-server") {
        "server"
    } else {
        "other"
    }
}
