//! The repository's Dockerfile, read and replayed without a Docker engine.
//!
//! [`Dockerfile::parse`] understands the instructions the file uses (FROM, WORKDIR, COPY, RUN,
//! USER, ENTRYPOINT, CMD, EXPOSE, LABEL, ARG). [`Dockerfile::replay_build`] runs the build
//! stage the way `docker build` would, in an empty directory: the same COPY set, then each RUN
//! with `bash -c`, so a placeholder the dependency step forgets fails here as it fails in
//! Docker. The final stage's [`ImageConfig`] is what the test image must match.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

/// One instruction, with continuation lines joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// Upper-case keyword, e.g. `COPY`.
    pub keyword: String,
    /// Everything after the keyword.
    pub args: String,
}

/// A stage: from one FROM to the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// The base image.
    pub from: String,
    /// `AS name`, if any.
    pub name: Option<String>,
    /// The instructions after FROM.
    pub instructions: Vec<Instruction>,
}

/// What the final stage says about the image it makes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageConfig {
    /// `ENTRYPOINT` (exec form).
    pub entrypoint: Vec<String>,
    /// `CMD` (exec form).
    pub cmd: Vec<String>,
    /// `USER`.
    pub user: String,
    /// `EXPOSE`d ports, e.g. `8080/tcp`.
    pub exposed_ports: Vec<String>,
    /// `LABEL`s, with `${ARG}` replaced by the ARG defaults.
    pub labels: BTreeMap<String, String>,
    /// `COPY --from=<stage> <src> <dest>`: the files the image takes from the build stage.
    pub copies_from_build: Vec<(String, String)>,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone)]
pub struct Dockerfile {
    /// Its stages in order.
    pub stages: Vec<Stage>,
}

/// Splits exec-form JSON (`["a", "b"]`).
fn exec_form(args: &str) -> anyhow::Result<Vec<String>> {
    serde_json::from_str(args.trim()).with_context(|| format!("not exec form: {args}"))
}

impl Dockerfile {
    /// The Dockerfile at the repository root.
    pub fn of_repo() -> anyhow::Result<Dockerfile> {
        Self::parse(&std::fs::read_to_string(repo_root().join("Dockerfile"))?)
    }

    /// Parses the subset of the syntax the project's Dockerfile uses.
    pub fn parse(text: &str) -> anyhow::Result<Dockerfile> {
        let mut lines = Vec::new();
        let mut current = String::new();
        for raw in text.lines() {
            let line = raw.trim_end();
            if current.is_empty() && (line.trim_start().starts_with('#') || line.trim().is_empty())
            {
                continue;
            }
            if line.trim_start().starts_with('#') {
                continue; // a comment inside a continued instruction
            }
            match line.strip_suffix('\\') {
                Some(head) => {
                    current.push_str(head);
                    current.push(' ');
                }
                None => {
                    current.push_str(line);
                    lines.push(std::mem::take(&mut current));
                }
            }
        }
        let mut stages: Vec<Stage> = Vec::new();
        for line in lines {
            let line = line.trim();
            let (keyword, args) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let keyword = keyword.to_ascii_uppercase();
            let args = args.trim().to_string();
            if keyword == "FROM" {
                let mut parts = args.split_whitespace();
                let from = parts.next().context("FROM without an image")?.to_string();
                let name = match (parts.next(), parts.next()) {
                    (Some(as_), Some(name)) if as_.eq_ignore_ascii_case("as") => {
                        Some(name.to_string())
                    }
                    _ => None,
                };
                stages.push(Stage {
                    from,
                    name,
                    instructions: Vec::new(),
                });
            } else {
                stages
                    .last_mut()
                    .context("an instruction before the first FROM")?
                    .instructions
                    .push(Instruction { keyword, args });
            }
        }
        if stages.is_empty() {
            bail!("no FROM in the Dockerfile");
        }
        Ok(Dockerfile { stages })
    }

    /// The stage named `name`.
    pub fn stage(&self, name: &str) -> anyhow::Result<&Stage> {
        self.stages
            .iter()
            .find(|s| s.name.as_deref() == Some(name))
            .with_context(|| format!("no stage named {name}"))
    }

    /// What the final stage configures.
    pub fn final_config(&self) -> anyhow::Result<ImageConfig> {
        let last = self.stages.last().expect("parse ensures a stage");
        let mut args: BTreeMap<String, String> = BTreeMap::new();
        let mut config = ImageConfig::default();
        for i in &last.instructions {
            match i.keyword.as_str() {
                "ARG" => {
                    if let Some((k, v)) = i.args.split_once('=') {
                        args.insert(k.trim().into(), v.trim().into());
                    }
                }
                "ENTRYPOINT" => config.entrypoint = exec_form(&i.args)?,
                "CMD" => config.cmd = exec_form(&i.args)?,
                "USER" => config.user = i.args.clone(),
                "EXPOSE" => config
                    .exposed_ports
                    .extend(i.args.split_whitespace().map(|p| {
                        if p.contains('/') {
                            p.to_string()
                        } else {
                            format!("{p}/tcp")
                        }
                    })),
                "LABEL" => {
                    for (k, v) in label_pairs(&i.args)? {
                        let mut value = v;
                        for (name, default) in &args {
                            value = value.replace(&format!("${{{name}}}"), default);
                        }
                        config.labels.insert(k, value);
                    }
                }
                "COPY" => {
                    let words: Vec<&str> = i.args.split_whitespace().collect();
                    if let Some(from) = words.first().and_then(|w| w.strip_prefix("--from=")) {
                        let _ = from;
                        if let [src, dest] = &words[1..] {
                            config
                                .copies_from_build
                                .push((src.to_string(), dest.to_string()));
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(config)
    }

    /// Replays stage `name` in `dir` (empty, made if missing): WORKDIR maps to `dir`, COPY
    /// copies from the repository, RUN runs with `bash -c` there, with `/out` mapped to
    /// `dir/out` and `dir/target` a link to `target_dir` (so compiled dependencies survive
    /// between replays, like Docker's layer cache). Returns `dir/out`.
    pub fn replay_build(
        &self,
        name: &str,
        dir: &Path,
        target_dir: &Path,
    ) -> anyhow::Result<PathBuf> {
        let stage = self.stage(name)?;
        let root = repo_root();
        std::fs::create_dir_all(dir)?;
        std::fs::create_dir_all(target_dir)?;
        let link = dir.join("target");
        if !link.exists() {
            std::os::unix::fs::symlink(target_dir, &link)?;
        }
        let out = dir.join("out");
        for i in &stage.instructions {
            match i.keyword.as_str() {
                "WORKDIR" | "ARG" | "ENV" | "LABEL" => {}
                "COPY" => {
                    let words: Vec<&str> = i.args.split_whitespace().collect();
                    let (dest, sources) = words.split_last().context("COPY with no arguments")?;
                    for src in sources {
                        if src.starts_with("--") {
                            bail!("COPY flag {src} is not replayed");
                        }
                        let from = root.join(src);
                        let to = if dest.ends_with('/') || *dest == "." || sources.len() > 1 {
                            dir.join(dest)
                                .join(Path::new(src).file_name().context("src name")?)
                        } else {
                            dir.join(dest)
                        };
                        copy_tree(&from, &to)
                            .with_context(|| format!("COPY {src} {dest}: {}", from.display()))?;
                    }
                }
                "RUN" => {
                    let script = i.args.replace(" /out/", &format!(" {}/", out.display()));
                    let status = Command::new("bash")
                        .args(["-euo", "pipefail", "-c", &script])
                        .current_dir(dir)
                        .env_remove("CARGO_TARGET_DIR")
                        .status()
                        .context("running bash")?;
                    if !status.success() {
                        bail!("RUN failed ({status}): {}", i.args);
                    }
                }
                other => bail!("{other} is not replayed"),
            }
        }
        Ok(out)
    }
}

/// `k="v" k2="v2"` pairs of a LABEL.
fn label_pairs(args: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = args.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').context("LABEL without =")?;
        let after = after.trim_start();
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').context("unterminated label value")?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            after.split_once(char::is_whitespace).unwrap_or((after, ""))
        };
        out.push((key.trim().to_string(), value.to_string()));
        rest = tail.trim_start();
    }
    Ok(out)
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    let meta = std::fs::metadata(from)?;
    if meta.is_dir() {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
    } else {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(from, to)?;
    }
    Ok(())
}

/// The repository root (the parent of `testkit/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives in the repository")
        .to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stages_continuations_and_the_final_config() {
        let file = Dockerfile::parse(
            r#"
# comment
FROM rust:1 AS build
WORKDIR /src
COPY a b ./
RUN echo one \
    && echo two
FROM distroless
ARG VERSION=1.2.3
LABEL org.opencontainers.image.version="${VERSION}" \
      other="x y"
COPY --from=build /out/bin /bin
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/bin"]
CMD ["operator"]
"#,
        )
        .unwrap();
        assert_eq!(file.stages.len(), 2);
        let build = file.stage("build").unwrap();
        assert_eq!(build.instructions[2].args, "echo one      && echo two");
        let config = file.final_config().unwrap();
        assert_eq!(config.entrypoint, vec!["/bin"]);
        assert_eq!(config.cmd, vec!["operator"]);
        assert_eq!(config.user, "65532:65532");
        assert_eq!(config.exposed_ports, vec!["8080/tcp", "9090/tcp"]);
        assert_eq!(config.labels["org.opencontainers.image.version"], "1.2.3");
        assert_eq!(config.labels["other"], "x y");
        assert_eq!(
            config.copies_from_build,
            vec![("/out/bin".to_string(), "/bin".to_string())]
        );
    }
}
