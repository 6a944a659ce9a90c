//! End-to-end tests of releases as static signed files: `driftless
//! publish` writes them from a clone of the release repository (made at
//! run time with the real `git` and `ssh-keygen`), nginx serves the
//! directory as plain files (`support/servers.rs`, `/static/`), and the
//! built `driftless apply` boots a node root from them (`source.kind:
//! static`), over http:// and from file://, exactly as from git.

#[path = "support/release.rs"]
mod release;
#[path = "support/servers.rs"]
mod servers;

use std::fs;
use std::path::{Path, PathBuf};

use release::{
    AGENT_DIR, Config, Key, NodeRoot, PRINCIPAL, Published, REPO, Release, Run, TAG, Tagging,
    World, diff, snapshot,
};
use servers::{Fault, FaultProxy, SmartHttp, noise, run_bounded};

/// Exit code: the release could not be fetched.
const EXIT_FETCH: i32 = 4;
/// Exit code: a signature or pin was refused.
const EXIT_VERIFY: i32 = 5;
/// The publish directory's name under `srv/`.
const OUT: &str = "static";

/// A release with a few files, one of them large enough to be delta and
/// zlib work.
fn small_release() -> Release {
    Release::new(
        "files:\n  - { path: /srv/app/a.conf, source: files/a.conf }\n  \
         - { path: /srv/app/data.bin, source: files/data.bin, mode: '0640' }\n  \
         - { path: /srv/app/deep/b.txt, source: files/deep/b.txt }\n",
    )
    .file("files/a.conf", "[a]\nx = 1\n")
    .file("files/data.bin", noise(300_000, 11))
    .file("files/deep/b.txt", "b\n")
    .file("files/unused.txt", "in the tree, not in the spec\n")
}

/// A world with a signed release in `srv/release.git` and the release
/// key's allowed_signers on the host.
struct Fixture {
    world: World,
    key: Key,
    published: Published,
    allowed: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let world = World::new();
        let key = world.keygen("release");
        let published = world.publish(REPO, &small_release(), TAG, Tagging::Signed(&key));
        let allowed = world.path("allowed_signers");
        fs::write(&allowed, format!("{}\n", key.allowed(PRINCIPAL))).expect("allowed_signers");
        Self {
            world,
            key,
            published,
            allowed,
        }
    }

    /// `driftless publish ARGS… --repo srv/release.git --out srv/static
    /// --allowed-signers FILE`.
    fn publish(&self, args: &[&str]) -> Run {
        let out = self.out();
        let mut all = vec!["publish", "--out", out.to_str().expect("UTF-8 path")];
        all.extend(args);
        self.driftless(&all)
    }

    /// The channel started on [`TAG`] and published, the server started,
    /// and a node that follows the channel from its static files.
    fn channel_node(&self) -> (SmartHttp, NodeRoot) {
        let key = self.key.private.to_str().expect("UTF-8 path");
        self.driftless(&["channel", "init", TAG, "--signing-key", key])
            .ok();
        self.publish(&["--channel", "channel"]).ok();
        let http = SmartHttp::start(&self.world.srv()).expect("start nginx");
        let root = self.world.root("node");
        root.trust(&[self.key.allowed(PRINCIPAL)]);
        root.write(
            "/etc/driftless/agent.yaml",
            channel_node_config(&http.static_url(OUT)),
        );
        (http, root)
    }

    /// Publishes release `tag` (`a.conf` holding `x`), moves the channel
    /// to it and publishes the channel again.
    fn promote(&self, tag: &str, x: usize) {
        let key = self.key.private.to_str().expect("UTF-8 path");
        self.world.publish(
            REPO,
            &small_release().file("files/a.conf", format!("[a]\nx = {x}\n")),
            tag,
            Tagging::Signed(&self.key),
        );
        self.driftless(&["channel", "promote", tag, "--signing-key", key])
            .ok();
        self.publish(&["--channel", "channel"]).ok();
    }

    /// A pack of exactly the object `id` of the published repository.
    fn pack_of(&self, id: &str) -> Vec<u8> {
        use std::io::Write as _;
        let mut git = self.world.git();
        let mut child = git
            .arg("--git-dir")
            .arg(&self.published.bare)
            .args(["pack-objects", "--stdout", "-q"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("git pack-objects");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{id}\n").as_bytes())
            .expect("the object's id");
        let out = child.wait_with_output().expect("git pack-objects");
        assert!(out.status.success(), "git pack-objects failed");
        out.stdout
    }

    /// The id of the tag object `tag` names in the published repository.
    fn tag_object_of(&self, tag: &str) -> String {
        self.world.tool(
            self.world
                .git()
                .arg("--git-dir")
                .arg(&self.published.bare)
                .args(["rev-parse", &format!("refs/tags/{tag}")]),
        )
    }

    /// `driftless ARGS… --repo srv/release.git --allowed-signers FILE`,
    /// with the world's git environment (committer, HOME).
    fn driftless(&self, args: &[&str]) -> Run {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_driftless"));
        let git = self.world.git();
        for (name, value) in git.get_envs() {
            match value {
                Some(value) => cmd.env(name, value),
                None => cmd.env_remove(name),
            };
        }
        cmd.args(args)
            .arg("--repo")
            .arg(&self.published.bare)
            .arg("--allowed-signers")
            .arg(&self.allowed);
        let done = run_bounded(&mut cmd, release::DRIFTLESS_TIMEOUT).expect("run driftless");
        Run::from_finished(format!("driftless {}", args.join(" ")), done)
    }

    fn out(&self) -> PathBuf {
        self.world.srv().join(OUT)
    }

    /// A node root configured for `url`, a static source when `kind` says.
    fn root(&self, name: &str, url: &str, kind: Option<&str>) -> NodeRoot {
        let mut config = Config::new(url);
        config.kind = kind.map(str::to_owned);
        self.world.configured_root(name, &self.key, &config)
    }
}

/// A root's snapshot but the agent's own directory and its config (which
/// names the source).
fn applied(root: &NodeRoot) -> release::Snapshot {
    snapshot(root.path(), &[AGENT_DIR, "etc/driftless/agent.yaml"])
}

/// Every file under `dir`, relative, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).expect("list") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).expect("under");
                out.push(rel.display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn publish_writes_one_content_addressed_pack_its_head_and_the_tag_file() {
    let f = Fixture::new();
    let run = f.publish(&[TAG]).ok();
    let pack = format!("releases/{}.pack", f.published.tag_object);
    let head = format!("releases/{}.head.pack", f.published.tag_object);
    assert_eq!(
        files_under(&f.out()),
        [head.clone(), pack.clone(), format!("tags/{TAG}")],
        "{}",
        run.describe()
    );
    // The head is the tag and its commit alone: two objects.
    let head_len = fs::metadata(f.out().join(&head)).expect("head").len();
    let head_bytes = fs::read(f.out().join(&head)).expect("head");
    assert_eq!(&head_bytes[..4], b"PACK", "a pack");
    assert_eq!(
        u32::from_be_bytes(head_bytes[8..12].try_into().expect("four bytes")),
        2,
        "the head holds the tag and the commit"
    );
    assert!(head_len < 4096, "the head is {head_len} bytes");
    assert_eq!(
        fs::read_to_string(f.out().join(format!("tags/{TAG}"))).expect("tag file"),
        format!("{}\n", f.published.tag_object)
    );
    // git itself reads the pack: exactly the tag, its commit, the trees and
    // blobs of the commit's tree, nothing of the parent commit.
    let pack_path = f.out().join(&pack);
    let in_order = list_pack(&f.world, &pack_path);
    let kinds: Vec<&str> = in_order.iter().map(|(_, k)| k.as_str()).collect();
    let rank = |k: &str| {
        ["tag", "commit", "tree", "blob"]
            .iter()
            .position(|x| *x == k)
    };
    assert_eq!(
        (in_order[0].0.as_str(), kinds[0], kinds[1]),
        (f.published.tag_object.as_str(), "tag", "commit"),
        "the tag and its commit first: {in_order:?}"
    );
    assert!(
        kinds.windows(2).all(|w| rank(w[0]) <= rank(w[1])),
        "then the trees, then the blobs: {kinds:?}"
    );
    let mut listed: Vec<String> = in_order.into_iter().map(|(id, _)| id).collect();
    listed.sort();
    let mut expected = f
        .world
        .tool(f.world.git().arg("--git-dir").arg(&f.published.bare).args([
            "rev-list",
            "--objects",
            "--no-object-names",
            "-n",
            "1",
            TAG,
        ]));
    expected.push('\n');
    expected.push_str(&f.published.tag_object);
    let mut expected: Vec<&str> = expected.lines().collect();
    expected.sort_unstable();
    expected.dedup();
    assert_eq!(listed, expected);
    assert!(!listed.contains(&f.published.parent));
    // Published again: the same files, untouched.
    let before = fs::read(&pack_path).expect("pack");
    f.publish(&[TAG]).ok();
    assert_eq!(fs::read(&pack_path).expect("pack"), before);
}

/// The objects of a pack in the order they are in it, `(id, type)`, as
/// `git index-pack` and `git verify-pack -v` read them.
fn list_pack(world: &World, pack: &Path) -> Vec<(String, String)> {
    let dir = world.path("index");
    fs::create_dir_all(&dir).expect("index dir");
    let copy = dir.join("p.pack");
    fs::copy(pack, &copy).expect("copy the pack");
    world.tool(world.git().arg("index-pack").arg(&copy));
    let text = world.tool(
        world
            .git()
            .args(["verify-pack", "-v"])
            .arg(dir.join("p.idx")),
    );
    let mut objects: Vec<(u64, String, String)> = text
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let id = *fields.first()?;
            (id.len() == 40 && fields.len() >= 5).then(|| {
                let offset = fields[4].parse().expect("offset");
                (offset, id.to_owned(), fields[1].to_owned())
            })
        })
        .collect();
    objects.sort();
    objects
        .into_iter()
        .map(|(_, id, kind)| (id, kind))
        .collect()
}

#[test]
fn publish_refuses_what_a_node_would_refuse() {
    let f = Fixture::new();
    let stranger = f.world.keygen("stranger");
    f.world.publish(
        REPO,
        &small_release(),
        "v-stranger",
        Tagging::Signed(&stranger),
    );
    f.world
        .publish(REPO, &small_release(), "v-light", Tagging::Lightweight);
    for (tag, needle) in [
        ("v-stranger", "not published"),
        ("v-light", "not published"),
    ] {
        let refused = f.publish(&[tag]);
        let text = refused.refused(EXIT_VERIFY, &[needle, tag]);
        eprintln!("{tag}: {text}");
    }
    assert!(!f.out().exists() || files_under(&f.out()).is_empty());
    // A tag file that names another tag object is never overwritten.
    fs::create_dir_all(f.out().join("tags")).expect("tags dir");
    fs::write(
        f.out().join(format!("tags/{TAG}")),
        format!("{}\n", f.published.commit),
    )
    .expect("stale tag file");
    f.publish(&[TAG])
        .refused(1, &["never made again under the same name"]);
}

#[test]
fn a_node_boots_from_the_static_files_as_from_git() {
    let f = Fixture::new();
    f.publish(&[TAG]).ok();
    let http = SmartHttp::start(&f.world.srv()).expect("start nginx");
    let from_git = f.root("git", &http.http_url(REPO), None);
    from_git.apply().ok();
    let expected = applied(&from_git);
    assert!(
        expected.keys().any(|p| p.ends_with("srv/app/deep/b.txt")),
        "the git node has the release"
    );
    let over_http = f.root("http", &http.static_url(OUT), Some("static"));
    over_http.apply().ok();
    assert_eq!(diff(&expected, &applied(&over_http)), Vec::<String>::new());
    // nginx logs a request a moment after the client saw its end.
    let requests = http
        .wait_for_requests(3, std::time::Duration::from_secs(5))
        .expect("access log");
    let statics: Vec<_> = requests
        .iter()
        .filter(|e| e.uri.starts_with("/static/"))
        .map(|e| (e.status, e.uri.clone()))
        .collect();
    assert_eq!(
        statics,
        [
            (200, format!("/static/{OUT}/tags/{TAG}")),
            (
                200,
                format!("/static/{OUT}/releases/{}.pack", f.published.tag_object)
            ),
            // The channel's tip, to record as this node's floor: none here.
            (404, format!("/static/{OUT}/channels/channel.bundle")),
        ]
    );
    let baked = f.root(
        "file",
        &format!("file://{}", f.out().display()),
        Some("static"),
    );
    baked.apply().ok();
    assert_eq!(diff(&expected, &applied(&baked)), Vec::<String>::new());
    let state = baked.state().expect("state");
    assert_eq!(
        state["release"]["tag_object"], f.published.tag_object,
        "{state}"
    );
}

#[test]
fn a_file_that_is_not_what_its_name_says_is_refused_and_leaves_nothing() {
    let f = Fixture::new();
    f.publish(&[TAG]).ok();
    // A second release, published; then its pack served under the first
    // one's name (a hostile or broken mirror).
    let other = f.world.publish(
        REPO,
        &small_release().file("files/a.conf", "[a]\nx = 2\n"),
        "v2.0.0",
        Tagging::Signed(&f.key),
    );
    f.publish(&["v2.0.0"]).ok();
    let out = f.out().join("releases");
    fs::copy(
        out.join(format!("{}.pack", other.tag_object)),
        out.join(format!("{}.pack", f.published.tag_object)),
    )
    .expect("swap");
    let root = f.root(
        "swapped",
        &format!("file://{}", f.out().display()),
        Some("static"),
    );
    let before = root.snapshot();
    let text = root.apply().refused(
        EXIT_FETCH,
        &[&f.published.tag_object, "not what its name says"],
    );
    eprintln!("{text}");
    assert_eq!(diff(&before, &root.snapshot()), Vec::<String>::new());
    let agent = snapshot(&root.path().join(AGENT_DIR), &[]);
    assert!(
        !agent
            .keys()
            .any(|p| p.to_string_lossy().contains("incoming")),
        "nothing staged: {:?}",
        agent.keys().collect::<Vec<_>>()
    );
    // A missing tag file is a fetch error that says what to do.
    fs::remove_file(f.out().join(format!("tags/{TAG}"))).expect("remove");
    let missing = f.root(
        "missing",
        &format!("file://{}", f.out().display()),
        Some("static"),
    );
    missing.apply().refused(EXIT_FETCH, &["driftless publish"]);
}

#[test]
fn publish_writes_the_channel_as_a_bundle_once_a_node_would_accept_it() {
    let f = Fixture::new();
    let key = f.key.private.to_str().expect("UTF-8 path");
    f.driftless(&[
        "channel",
        "init",
        TAG,
        "--signing-key",
        key,
        "--expires-in",
        "2s",
    ])
    .ok();
    let run = f.publish(&["--channel", "channel"]).ok();
    let bundle = f.out().join("channels/channel.bundle");
    assert_eq!(
        files_under(&f.out()),
        [
            "channels/channel.bundle".to_owned(),
            format!("releases/{}.head.pack", f.published.tag_object),
            format!("releases/{}.pack", f.published.tag_object),
            format!("tags/{TAG}"),
        ],
        "the channel and the release it names: {}",
        run.describe()
    );
    let tip = f.world.tool(
        f.world
            .git()
            .arg("--git-dir")
            .arg(&f.published.bare)
            .args(["rev-parse", "refs/heads/channel"]),
    );
    let heads = f
        .world
        .tool(f.world.git().args(["bundle", "list-heads"]).arg(&bundle));
    assert_eq!(heads, format!("{tip} refs/heads/channel"));
    // Expired, the same tip is what no node acts on: not published again.
    let before = fs::read(&bundle).expect("bundle");
    std::thread::sleep(std::time::Duration::from_secs(3));
    f.publish(&["--channel", "channel"])
        .refused(EXIT_VERIFY, &["a node would refuse it", "expired"]);
    assert_eq!(fs::read(&bundle).expect("bundle"), before);
}

/// The agent config of a node booting from, and watching, the static
/// channel at `url`; asking to be replaced runs `/bin/true`.
fn channel_node_config(url: &str) -> String {
    format!(
        "source:\n  url: {url:?}\n  kind: static\n\
         trust:\n  allowed_signers: /etc/driftless/allowed_signers\n\
         release: {{channel: channel}}\n\
         fetch: {}\n\
         lock: {{mode: off}}\n\
         clock: {{sync: ignore}}\n\
         replace: {{action: exec, command: [/bin/true]}}\n",
        release::FAST_FETCH
    )
}

/// The requests nginx logged for `needle`, as (status, uri).
fn requests_for(http: &SmartHttp, needle: &str) -> Vec<(u16, String)> {
    http.access_log()
        .expect("access log")
        .into_iter()
        .filter(|e| e.uri.contains(needle))
        .map(|e| (e.status, e.uri))
        .collect()
}

/// Runs `driftless watch --once` and waits until nginx logged `total`
/// requests in all.
fn watch_once(root: &NodeRoot, http: &SmartHttp, total: usize) -> Run {
    let run = root.driftless("watch", &["--once"], &[]);
    http.wait_for_requests(total, std::time::Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", run.describe()));
    run
}

#[test]
fn a_node_boots_from_and_polls_the_static_channel() {
    let f = Fixture::new();
    let (http, root) = f.channel_node();
    let bundle = f.out().join("channels/channel.bundle");
    let first_bundle = fs::read(&bundle).expect("bundle");
    // First boot: the channel from its bundle, judged in quarantine, then
    // the release it names, streamed.
    root.apply().ok();
    assert_eq!(root.state().expect("state")["release"]["tag"], TAG);
    let booted = http
        .wait_for_requests(2, std::time::Duration::from_secs(5))
        .expect("access log")
        .len();
    let tag_object_of = |tag: &str| f.tag_object_of(tag);
    assert_eq!(
        requests_for(&http, "/static/"),
        [
            (200, format!("/static/{OUT}/channels/channel.bundle")),
            (
                200,
                format!("/static/{OUT}/releases/{}.pack", tag_object_of(TAG))
            ),
        ]
    );

    // Polls: the first learns the ETag, an unchanged channel then costs a 304.
    watch_once(&root, &http, booted + 1).ok();
    watch_once(&root, &http, booted + 2).ok();
    let polls = requests_for(&http, "channels/channel.bundle");
    assert_eq!(
        polls.iter().map(|(status, _)| *status).collect::<Vec<_>>(),
        [200, 200, 304],
        "{polls:?}"
    );
    let log = http.access_log().expect("log");
    let (changed, unchanged) = (&log[log.len() - 2], &log[log.len() - 1]);
    eprintln!(
        "poll of the static channel: {} bytes sent for the first (200, header read, \
         bundle of {} bytes), {} for an unchanged one (304)",
        changed.bytes_sent,
        first_bundle.len(),
        unchanged.bytes_sent
    );
    assert!(unchanged.bytes_sent < 1024, "a 304 is small: {unchanged:?}");

    // A move: verified and acted on.
    f.promote("v2.0.0", 2);
    // The poll (200), then the evaluation's bundle and release.
    watch_once(&root, &http, booted + 5);
    let record: serde_json::Value =
        serde_json::from_slice(&root.read("/var/lib/driftless/watch.json")).expect("watch.json");
    assert_eq!(record["channel"]["file"]["release"], "v2.0.0", "{record}");
    assert_eq!(record["channel"]["file"]["sequence"], 2, "{record}");
    assert!(
        record["replacement"].is_object(),
        "asked to be replaced: {record}"
    );
    // Of the new release only its head, the tag and its commit: a move
    // does not cost every watching node the release.
    let releases = requests_for(&http, "/releases/");
    assert_eq!(
        releases.last(),
        Some(&(
            200,
            format!(
                "/static/{OUT}/releases/{}.head.pack",
                tag_object_of("v2.0.0")
            )
        )),
        "the new release's head was fetched: {releases:?}"
    );
    assert!(
        !releases
            .iter()
            .any(|(_, uri)| uri.ends_with(&format!("/releases/{}.pack", tag_object_of("v2.0.0")))),
        "and not its pack: {releases:?}"
    );

    // The older bundle served again: refused as a replay.
    fs::write(&bundle, &first_bundle).expect("replay the old bundle");
    let run = watch_once(&root, &http, booted + 7);
    let record: serde_json::Value =
        serde_json::from_slice(&root.read("/var/lib/driftless/watch.json")).expect("watch.json");
    assert_eq!(
        record["refusal"]["kind"],
        "replay",
        "{record}\n{}",
        run.describe()
    );
    assert_eq!(record["channel"]["file"]["sequence"], 2, "{record}");
}

#[test]
fn a_cut_download_resumes_with_a_range_request() {
    let f = Fixture::new();
    f.publish(&[TAG]).ok();
    let pack_len = fs::metadata(
        f.out()
            .join(format!("releases/{}.pack", f.published.tag_object)),
    )
    .expect("pack")
    .len();
    let http = SmartHttp::start(&f.world.srv()).expect("start nginx");
    // Every connection is cut after 120 KB: the pack needs several.
    let cut = 120_000;
    assert!(pack_len > 2 * cut, "the pack is {pack_len} bytes");
    let proxy = FaultProxy::start(http.http_addr(), Fault::CutAfter(cut)).expect("proxy");
    let url = format!("http://{}/static/{OUT}", proxy.addr());
    let root = f.root("resumed", &url, Some("static"));
    let run = root.apply().ok();
    let reference = f.root("whole", &http.static_url(OUT), Some("static"));
    reference.apply().ok();
    assert_eq!(
        diff(&applied(&reference), &applied(&root)),
        Vec::<String>::new()
    );
    let log = http
        .wait_for_requests(3, std::time::Duration::from_secs(5))
        .expect("access log");
    let pack: Vec<u16> = log
        .iter()
        .filter(|e| e.uri.contains("/releases/"))
        .map(|e| e.status)
        .collect();
    let expected = pack_len.div_ceil(cut - 1024) as usize;
    assert!(
        pack.len() >= 3 && pack.len() <= expected + 1 && pack[0] == 200,
        "one GET, then range requests: {pack:?}\n{}",
        run.describe()
    );
    assert!(
        pack[1..pack.len() - 1].iter().all(|s| *s == 206),
        "the rest resumed with 206 answers (the reference's 200 last): {pack:?}"
    );
    assert!(
        run.stderr.contains("resuming with a range request"),
        "{}",
        run.describe()
    );
}

#[test]
fn a_move_to_a_release_without_a_good_head_fetches_the_whole_release() {
    let f = Fixture::new();
    let (http, root) = f.channel_node();
    root.apply().ok();
    let tag_object_of = |tag: &str| f.tag_object_of(tag);
    let v1_head = f
        .out()
        .join(format!("releases/{}.head.pack", tag_object_of(TAG)));
    let v1_pack = f
        .out()
        .join(format!("releases/{}.pack", tag_object_of(TAG)));
    // v2's head is missing (a site published before heads); v3's is
    // another release's (v1's); v4's is a whole pack, past a head's bound
    // of two objects; v5's holds its tag alone, without the commit: each
    // move is still judged, from the release's pack.
    let moves = [
        ("v2.0.0", Spoil::Missing),
        ("v3.0.0", Spoil::CopyOf(v1_head)),
        ("v4.0.0", Spoil::CopyOf(v1_pack)),
        ("v5.0.0", Spoil::TagAlone),
    ];
    for (n, (tag, spoil)) in moves.into_iter().enumerate() {
        f.promote(tag, n + 2);
        let head = f
            .out()
            .join(format!("releases/{}.head.pack", tag_object_of(tag)));
        match spoil {
            Spoil::Missing => fs::remove_file(&head).expect("no head"),
            Spoil::CopyOf(other) => fs::copy(other, &head).map(drop).expect("a spoiled head"),
            Spoil::TagAlone => {
                fs::write(&head, f.pack_of(&tag_object_of(tag))).expect("a head of the tag alone")
            }
        }
        let run = root.driftless("watch", &["--once"], &[]);
        let record: serde_json::Value =
            serde_json::from_slice(&root.read("/var/lib/driftless/watch.json"))
                .expect("watch.json");
        assert_eq!(
            record["channel"]["file"]["release"],
            tag,
            "{record}\n{}",
            run.describe()
        );
        let pack = format!("/static/{OUT}/releases/{}.pack", tag_object_of(tag));
        servers::wait_for(std::time::Duration::from_secs(5), || {
            requests_for(&http, "/releases/")
                .contains(&(200, pack.clone()))
                .then_some(())
        })
        .unwrap_or_else(|| panic!("{tag}: the whole release was not fetched"));
        assert!(
            run.stderr.contains("fetching the whole release instead"),
            "{tag}: said why\n{}",
            run.describe()
        );
    }
}

/// How a release's head is spoiled on the mirror.
enum Spoil {
    /// Not there (a site published before heads).
    Missing,
    /// Another file in its place.
    CopyOf(PathBuf),
    /// A pack of the tag without its commit.
    TagAlone,
}

/// A static server that is not nginx: it serves the files under `dir`
/// (`GET /PATH`), but sends each release's head one byte every 500 ms,
/// the way a hostile mirror keeps a node waiting within any I/O timeout.
/// A hand-written fake: nginx cannot be made to trickle one path. Stops
/// when dropped.
struct TricklingHeads {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TricklingHeads {
    fn start(dir: PathBuf) -> Self {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("address");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut handlers = Vec::new();
            // At most 32 connections, each on its own thread.
            while !stopping.load(Ordering::Relaxed) && handlers.len() < 32 {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (dir, stopping) = (dir.clone(), stopping.clone());
                        handlers.push(std::thread::spawn(move || {
                            let _ = serve_one(stream, &dir, &stopping);
                        }));
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
                }
            }
            for handler in handlers {
                let _ = handler.join();
            }
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TricklingHeads {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Answers one request of [`TricklingHeads`].
fn serve_one(
    mut stream: std::net::TcpStream,
    dir: &Path,
    stop: &std::sync::atomic::AtomicBool,
) -> std::io::Result<()> {
    use std::io::{Read as _, Write as _};
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    let mut request = Vec::new();
    let mut byte = [0u8; 1];
    while !request.ends_with(b"\r\n\r\n") && request.len() < 8192 {
        stream.read_exact(&mut byte)?;
        request.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&request);
    let path = line
        .split(' ')
        .nth(1)
        .unwrap_or("/")
        .trim_start_matches('/');
    // Only files under `dir`: a path with `..` is refused before any read.
    let body = (!path.contains(".."))
        .then(|| fs::read(dir.join(path)).ok())
        .flatten();
    let Some(body) = body else {
        return stream.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    };
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if !path.ends_with(".head.pack") {
        return stream.write_all(&body);
    }
    for b in body {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        stream.write_all(&[b])?;
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    Ok(())
}

#[test]
fn a_trickled_head_costs_a_move_one_io_timeout_then_the_release_is_fetched() {
    let f = Fixture::new();
    let (_http, root) = f.channel_node();
    root.apply().ok();
    f.promote("v2.0.0", 2);
    // The move comes from a mirror that trickles heads.
    let mirror = TricklingHeads::start(f.out());
    root.write(
        "/etc/driftless/agent.yaml",
        channel_node_config(&format!("http://{}", mirror.addr)),
    );
    let run = root.driftless("watch", &["--once"], &[]);
    let record: serde_json::Value =
        serde_json::from_slice(&root.read("/var/lib/driftless/watch.json")).expect("watch.json");
    assert_eq!(
        record["channel"]["file"]["release"],
        "v2.0.0",
        "{record}\n{}",
        run.describe()
    );
    assert!(
        run.stderr.contains("fetching the whole release instead"),
        "{}",
        run.describe()
    );
    // FAST_FETCH: io_timeout 2 s, deadline 8 s. The head gets the first.
    assert!(
        run.elapsed < std::time::Duration::from_secs(6),
        "the trickled head held the move for {:?}\n{}",
        run.elapsed,
        run.describe()
    );
}
