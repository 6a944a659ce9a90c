//! systemd units: enabling them offline, as `systemctl --root` does, by
//! computing the symlinks from the unit's `[Install]` section, and talking to
//! a running systemd through `systemctl` when the root is the live system.
//!
//! Everything but [`systemd_is_live`] and [`Systemctl`] is pure logic.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::release::spec::UnitName;
use crate::types::NodePath;

/// Where the node's own units and their enablement links live.
pub const UNIT_DIR: &str = "/etc/systemd/system";

/// The `[Install]` section of a unit file: what `systemctl enable` acts on.
/// Every name in it is a valid unit name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstallSection {
    /// `WantedBy=`: units whose `.wants/` directory gets a link.
    pub wanted_by: Vec<String>,
    /// `RequiredBy=`: units whose `.requires/` directory gets a link.
    pub required_by: Vec<String>,
    /// `UpheldBy=`: units whose `.upholds/` directory gets a link.
    pub upheld_by: Vec<String>,
    /// `Alias=`: other names for the unit, each a link to it.
    pub alias: Vec<String>,
    /// `Also=`: units enabled together with this one (their own sections
    /// say how; [`enablement_links`] does not follow them).
    pub also: Vec<String>,
}

/// Reads the `[Install]` section of a unit file, following the syntax of
/// systemd.syntax(7) and systemd.unit(5): lines are trimmed, `#` and `;`
/// start comment lines, a trailing `\` joins the next line (comment lines in
/// between are skipped), sections may repeat, values are space-separated
/// unit names, repeated keys add to the list and an empty value (`WantedBy=`)
/// empties it. `DefaultInstance=` and `X-` keys are ignored; any other key in
/// `[Install]` is refused, so a typo cannot silently leave a unit disabled.
/// Specifiers such as `%i` and quoting are not supported: such names are
/// refused as invalid.
pub fn parse_install(unit_text: &str) -> Result<InstallSection, String> {
    let mut install = InstallSection::default();
    let mut in_install = false;
    for (number, line) in logical_lines(unit_text) {
        if let Some(header) = line.strip_prefix('[') {
            let section = header
                .strip_suffix(']')
                .ok_or_else(|| format!("line {number}: section header {line:?} lacks its ']'"))?;
            in_install = section == "Install";
            continue;
        }
        if !in_install {
            continue;
        }
        let (key, value) = line.split_once('=').ok_or_else(|| {
            format!("line {number}: expected KEY=VALUE in [Install], found {line:?}")
        })?;
        let key = key.trim_end();
        let list = match key {
            "WantedBy" => &mut install.wanted_by,
            "RequiredBy" => &mut install.required_by,
            "UpheldBy" => &mut install.upheld_by,
            "Alias" => &mut install.alias,
            "Also" => &mut install.also,
            "DefaultInstance" => continue,
            _ if key.starts_with("X-") => continue,
            _ => {
                return Err(format!(
                    "line {number}: unknown key {key:?} in [Install] (known: WantedBy, \
                     RequiredBy, UpheldBy, Alias, Also, DefaultInstance)"
                ));
            }
        };
        let value = value.trim();
        if value.is_empty() {
            list.clear();
            continue;
        }
        for name in value.split_whitespace() {
            UnitName::new(name).map_err(|e| format!("line {number}: {key}: {e}"))?;
            list.push(name.to_owned());
        }
    }
    Ok(install)
}

/// The logical lines of a unit file, trimmed, without blank and comment
/// lines, continuations joined, each with the number of its first line.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let is_comment = |line: &str| line.starts_with(['#', ';']);
    let mut lines = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if is_comment(line) || (line.is_empty() && pending.is_none()) {
            continue;
        }
        let (number, mut joined) = pending.take().unwrap_or((index + 1, String::new()));
        match line.strip_suffix('\\') {
            Some(start) => {
                joined.push_str(start);
                joined.push(' ');
                pending = Some((number, joined));
            }
            None => {
                joined.push_str(line);
                lines.push((number, joined));
            }
        }
    }
    if let Some((number, joined)) = pending {
        lines.push((number, joined.trim_end().to_owned()));
    }
    lines
}

/// The symlinks `systemctl enable` creates for `unit`, installed in
/// [`UNIT_DIR`], as (link, target) pairs in section order without
/// duplicates: `UNIT_DIR/T.wants/UNIT` for each `WantedBy=T` (`.requires/`
/// for `RequiredBy=`, `.upholds/` for `UpheldBy=`) and `UNIT_DIR/ALIAS` for
/// each `Alias=`, all pointing at `UNIT_DIR/UNIT`. `Also=` units are not
/// followed: enable them with their own sections.
///
/// Bare templates (`getty@.service`) are refused: enabling one needs an
/// instance name (`DefaultInstance=` or `getty@tty1.service`), and driftless
/// keeps it simple by having the release install the instance unit itself.
/// An alias must have the unit's type suffix and must not be a template.
pub fn enablement_links(
    unit: &UnitName,
    install: &InstallSection,
) -> Result<Vec<(NodePath, String)>, String> {
    let name = unit.as_str();
    if is_template(name) {
        return Err(format!(
            "{name} is a template; driftless does not enable templates, install an instance \
             unit (e.g. {}NAME.{}) instead",
            name.rsplit_once('.').map_or(name, |(stem, _)| stem),
            unit_type(name)
        ));
    }
    let target = unit_path(name)?.to_string();
    let mut links: Vec<(NodePath, String)> = Vec::new();
    let mut add = |link: NodePath| {
        if !links.iter().any(|(existing, _)| *existing == link) {
            links.push((link, target.clone()));
        }
    };
    let dependents = [
        ("wants", &install.wanted_by),
        ("requires", &install.required_by),
        ("upholds", &install.upheld_by),
    ];
    for (suffix, list) in dependents {
        for dependent in list {
            let dependent = UnitName::new(dependent)?;
            add(unit_path(&format!(
                "{}.{suffix}/{name}",
                dependent.as_str()
            ))?);
        }
    }
    for alias in &install.alias {
        let alias = UnitName::new(alias)?;
        let alias = alias.as_str();
        if unit_type(alias) != unit_type(name) || is_template(alias) || alias == name {
            return Err(format!(
                "{name}: Alias={alias} must be another non-template name ending in .{}",
                unit_type(name)
            ));
        }
        add(unit_path(alias)?);
    }
    Ok(links)
}

/// The symlink that masks `unit`: `UNIT_DIR/UNIT` pointing at `/dev/null`.
pub fn mask_link(unit: &UnitName) -> (NodePath, String) {
    let link = unit_path(unit.as_str())
        .expect("a valid unit name is one path component of at most 255 bytes");
    (link, "/dev/null".to_owned())
}

/// `UNIT_DIR/relative` as a node path.
fn unit_path(relative: &str) -> Result<NodePath, String> {
    NodePath::new(&format!("{UNIT_DIR}/{relative}"))
}

/// The type suffix of a unit name (`service` for `app.service`).
fn unit_type(name: &str) -> &str {
    name.rsplit_once('.').map_or("", |(_, ty)| ty)
}

/// True for a bare template such as `getty@.service`.
fn is_template(name: &str) -> bool {
    name.rsplit_once('.')
        .is_some_and(|(stem, _)| stem.ends_with('@'))
}

/// True when `root` is the running system's `/` and that system was booted
/// with systemd (`/run/systemd/system` exists, as sd_booted(3) checks), so
/// units can be reloaded and started; otherwise links are made offline.
pub fn systemd_is_live(root: &Path) -> bool {
    std::fs::canonicalize(root).is_ok_and(|root| root == Path::new("/"))
        && Path::new("/run/systemd/system").is_dir()
}

/// Runs the real `systemctl` against the live system manager. Each call is
/// non-interactive (`--no-ask-password`) and killed after a timeout; errors
/// carry the first line systemctl wrote to stderr.
#[derive(Debug, Clone)]
pub struct Systemctl {
    program: PathBuf,
    timeout: Duration,
}

impl Default for Systemctl {
    fn default() -> Self {
        Self::new()
    }
}

impl Systemctl {
    /// How long one call may take by default.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(90);

    /// `systemctl` from `PATH`, with [`Self::DEFAULT_TIMEOUT`].
    pub fn new() -> Self {
        Self::with_program("systemctl", Self::DEFAULT_TIMEOUT)
    }

    /// Another program (e.g. `/usr/bin/systemctl`) or timeout.
    pub fn with_program(program: impl Into<PathBuf>, timeout: Duration) -> Self {
        Self {
            program: program.into(),
            timeout,
        }
    }

    /// `systemctl daemon-reload`: makes systemd read changed unit files.
    pub fn daemon_reload(&self) -> Result<(), String> {
        self.run(&["daemon-reload"])
    }

    /// `systemctl enable UNITS`; nothing to do for an empty list.
    pub fn enable(&self, units: &[UnitName]) -> Result<(), String> {
        self.run_on("enable", units)
    }

    /// `systemctl start UNITS`, waiting for the start jobs to finish.
    pub fn start(&self, units: &[UnitName]) -> Result<(), String> {
        self.run_on("start", units)
    }

    /// `systemctl stop UNITS`, waiting for the stop jobs to finish.
    pub fn stop(&self, units: &[UnitName]) -> Result<(), String> {
        self.run_on("stop", units)
    }

    /// `systemctl mask UNITS`.
    pub fn mask(&self, units: &[UnitName]) -> Result<(), String> {
        self.run_on("mask", units)
    }

    /// `systemctl is-active UNIT`; false when it is not, or when systemctl
    /// cannot tell.
    pub fn is_active(&self, unit: &UnitName) -> bool {
        self.call(&["is-active", "--quiet", "--", unit.as_str()])
            .is_ok_and(|(status, _)| status.success())
    }

    fn run_on(&self, verb: &str, units: &[UnitName]) -> Result<(), String> {
        if units.is_empty() {
            return Ok(());
        }
        // `--` so that a unit named like an option stays a unit name.
        let mut args = vec![verb, "--"];
        args.extend(units.iter().map(UnitName::as_str));
        self.run(&args)
    }

    fn run(&self, args: &[&str]) -> Result<(), String> {
        let (status, stderr) = self.call(args)?;
        if status.success() {
            return Ok(());
        }
        let what = format!("{} failed ({status})", shown(args));
        match stderr.lines().map(str::trim).find(|line| !line.is_empty()) {
            Some(first) => Err(format!("{what}: {first}")),
            None => Err(what),
        }
    }

    /// Runs systemctl with `args`; its exit status and stderr (at most 64 KiB).
    fn call(&self, args: &[&str]) -> Result<(ExitStatus, String), String> {
        const STDERR_LIMIT: u64 = 64 * 1024;
        const POLL: Duration = Duration::from_millis(20);
        let shown = shown(args);
        let mut child = Command::new(&self.program)
            .arg("--no-ask-password")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{shown}: cannot run {}: {e}", self.program.display()))?;
        // Read stderr on the side so a chatty systemctl never blocks on a full pipe.
        let stderr = child.stderr.take();
        let reader = std::thread::spawn(move || {
            let mut kept = Vec::new();
            if let Some(mut pipe) = stderr {
                let _ = pipe.by_ref().take(STDERR_LIMIT).read_to_end(&mut kept);
                let _ = std::io::copy(&mut pipe, &mut std::io::sink());
            }
            kept
        });
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
                outcome => {
                    let _ = child.kill();
                    let _ = child.wait();
                    // The reader is left to finish on its own once the pipe closes.
                    return Err(match outcome {
                        Err(e) => format!("{shown}: waiting for it failed: {e}"),
                        Ok(_) => format!("{shown}: no answer within {:?}; killed it", self.timeout),
                    });
                }
            }
        };
        let stderr = reader
            .join()
            .map_err(|_| format!("{shown}: reading its stderr failed"))?;
        Ok((status, String::from_utf8_lossy(&stderr).into_owned()))
    }
}

/// A systemctl command line for messages, without the `--` separator.
fn shown(args: &[&str]) -> String {
    let words: Vec<&str> = args.iter().copied().filter(|a| *a != "--").collect();
    format!("systemctl {}", words.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(name: &str) -> UnitName {
        UnitName::new(name).expect("valid test unit name")
    }

    fn links(name: &str, text: &str) -> Result<Vec<(String, String)>, String> {
        let install = parse_install(text)?;
        Ok(enablement_links(&unit(name), &install)?
            .into_iter()
            .map(|(link, target)| (link.to_string(), target))
            .collect())
    }

    #[test]
    fn install_section_is_read_with_systemd_syntax() {
        let text = "[Unit]\n\
            Description=App \\\n  WantedBy=not-this.target\n\
            [Service]\n\
            ExecStart=/usr/bin/app\n\
            [Install]\n\
            # a comment\n\
            ; another\n\
            WantedBy = multi-user.target  graphical.target\n\
            WantedBy=default.target\n\
            RequiredBy=a.target \\\n\
            # skipped inside a continuation\n\
            \x20 b.target\n\
            Alias=app-alias.service\n\
            Also=app.socket\n\
            DefaultInstance=x\n\
            X-Vendor=whatever\n\
            [Service]\n\
            WantedBy=ignored.target\n\
            [Install]\n\
            UpheldBy=c.target\n";
        let install = parse_install(text).expect("parses");
        assert_eq!(
            install,
            InstallSection {
                wanted_by: vec![
                    "multi-user.target".into(),
                    "graphical.target".into(),
                    "default.target".into()
                ],
                required_by: vec!["a.target".into(), "b.target".into()],
                upheld_by: vec!["c.target".into()],
                alias: vec!["app-alias.service".into()],
                also: vec!["app.socket".into()],
            }
        );
    }

    #[test]
    fn an_empty_assignment_resets_the_list() {
        let install =
            parse_install("[Install]\nWantedBy=a.target\nWantedBy=\nWantedBy=b.target\r\n")
                .expect("parses");
        assert_eq!(install.wanted_by, ["b.target"]);
        assert_eq!(
            parse_install("[Unit]\nDescription=x\n"),
            Ok(InstallSection::default())
        );
        assert_eq!(parse_install(""), Ok(InstallSection::default()));
        let trailing = parse_install("[Install]\nWantedBy=a.target \\").expect("parses");
        assert_eq!(trailing.wanted_by, ["a.target"]);
    }

    #[test]
    fn bad_install_sections_are_refused() {
        let err = parse_install("[Install]\nWantedBY=multi-user.target\n").expect_err("typo");
        assert!(
            err.starts_with("line 2: unknown key \"WantedBY\" in [Install]"),
            "{err}"
        );
        let err = parse_install("[Unit]\n\n[Install]\nWantedBy=../evil.target\n").expect_err("bad");
        assert!(
            err.starts_with("line 4: WantedBy: \"../evil.target\" is not a valid"),
            "{err}"
        );
        let err = parse_install("[Install]\nWantedBy=%i.target\n").expect_err("specifier");
        assert!(err.contains("not a valid systemd unit name"), "{err}");
        let err = parse_install("[Install\nWantedBy=a.target\n").expect_err("header");
        assert_eq!(err, "line 1: section header \"[Install\" lacks its ']'");
        let err = parse_install("[Install]\nmulti-user.target\n").expect_err("no =");
        assert!(err.starts_with("line 2: expected KEY=VALUE"), "{err}");
    }

    #[test]
    fn links_follow_systemctl_enable() {
        let text = "[Install]\nWantedBy=multi-user.target\nRequiredBy=a.target\n\
                    UpheldBy=b.target\nAlias=web.service\nWantedBy=multi-user.target\n";
        let target = "/etc/systemd/system/app.service".to_owned();
        assert_eq!(
            links("app.service", text),
            Ok(vec![
                (
                    "/etc/systemd/system/multi-user.target.wants/app.service".into(),
                    target.clone()
                ),
                (
                    "/etc/systemd/system/a.target.requires/app.service".into(),
                    target.clone()
                ),
                (
                    "/etc/systemd/system/b.target.upholds/app.service".into(),
                    target.clone()
                ),
                ("/etc/systemd/system/web.service".into(), target),
            ])
        );
        assert_eq!(links("app.service", "[Unit]\n"), Ok(vec![]));
        let instance = links("getty@tty1.service", "[Install]\nWantedBy=getty.target\n");
        assert_eq!(
            instance,
            Ok(vec![(
                "/etc/systemd/system/getty.target.wants/getty@tty1.service".into(),
                "/etc/systemd/system/getty@tty1.service".into()
            )])
        );
    }

    #[test]
    fn templates_and_bad_aliases_are_refused() {
        let err =
            links("getty@.service", "[Install]\nWantedBy=getty.target\n").expect_err("template");
        assert_eq!(
            err,
            "getty@.service is a template; driftless does not enable templates, install an \
             instance unit (e.g. getty@NAME.service) instead"
        );
        let err = links("app.service", "[Install]\nAlias=app.socket\n").expect_err("type");
        assert_eq!(
            err,
            "app.service: Alias=app.socket must be another non-template name ending in .service"
        );
        assert!(links("app.service", "[Install]\nAlias=a@.service\n").is_err());
        let bad = InstallSection {
            wanted_by: vec!["../x.target".into()],
            ..Default::default()
        };
        assert!(enablement_links(&unit("app.service"), &bad).is_err());
    }

    #[test]
    fn masking_links_to_dev_null() {
        let (link, target) = mask_link(&unit("ctrl-alt-del.target"));
        assert_eq!(link.as_str(), "/etc/systemd/system/ctrl-alt-del.target");
        assert_eq!(target, "/dev/null");
    }

    #[test]
    fn a_temp_dir_is_never_live() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(!systemd_is_live(dir.path()));
        assert!(!systemd_is_live(Path::new("/nonexistent/root")));
    }

    #[test]
    fn systemctl_failures_carry_stderr_and_time_out() {
        use std::os::unix::fs::PermissionsExt;
        // A stand-in for systemctl: $1 is --no-ask-password, $2 the verb, $4 the unit.
        let dir = tempfile::tempdir().expect("temp dir");
        let fake = dir.path().join("systemctl");
        let script = "#!/bin/sh\n\
            case \"$2\" in\n\
            daemon-reload) exit 0 ;;\n\
            start) echo; echo \"Job for $4 failed.\" >&2; echo more >&2; exit 1 ;;\n\
            is-active) [ \"$5\" = up.service ] ;;\n\
            *) sleep 5 ;;\n\
            esac\n";
        std::fs::write(&fake, script).expect("write fake systemctl");
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let ctl = Systemctl::with_program(&fake, Duration::from_secs(5));
        assert_eq!(ctl.daemon_reload(), Ok(()));
        assert_eq!(
            ctl.start(&[unit("app.service")]),
            Err(
                "systemctl start app.service failed (exit status: 1): Job for app.service \
                 failed."
                    .into()
            )
        );
        assert!(ctl.is_active(&unit("up.service")));
        assert!(!ctl.is_active(&unit("down.service")));
        assert_eq!(ctl.enable(&[]), Ok(()));
        let slow = Systemctl::with_program(&fake, Duration::from_millis(200));
        assert_eq!(
            slow.mask(&[unit("app.service")]),
            Err("systemctl mask app.service: no answer within 200ms; killed it".into())
        );
        let missing = Systemctl::with_program("/nonexistent/systemctl", Duration::from_secs(1));
        let err = missing.daemon_reload().expect_err("missing program");
        assert!(
            err.starts_with("systemctl daemon-reload: cannot run /nonexistent/systemctl"),
            "{err}"
        );
        assert!(!missing.is_active(&unit("app.service")));
    }
}
