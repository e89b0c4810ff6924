//! The sanitize report's `upload` object and the README's first run, through the binary.
//!
//! Oracles imgsan shares no code with: `md5sum` and `sha512sum` of the output file;
//! python-openstackclient's own `image create` argument parser (installed from PyPI
//! into a virtualenv cached under target/tmp, no cloud needed); Python's jsonschema
//! for the report; the guest fixtures' own os-release values (tests/common/guest.rs);
//! `sgdisk` for the shrunk disk's partition table; the README's text itself for the
//! main-job command, run on the disk examples/make-sample-disk.sh makes.
//!
//! Needs root (the fixtures chown their files), e2fsprogs, gdisk, dosfstools, mtools,
//! qemu-img, python3 with venv and network access to PyPI the first time
//! (.ci/setup.sh). About 2 minutes on 2 cores, most of it the eight guest fixtures and,
//! once, `pip install python-openstackclient` (about a minute).

#[path = "common/disk.rs"]
mod disk;
#[path = "common/guest.rs"]
mod guest;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use guest::{Distro, GuestOptions};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn imgsan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imgsan"))
        .args(args)
        .env("CI", "1")
        .output()
        .expect("imgsan runs")
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The first word of `tool FILE`'s output: md5sum and sha512sum print "HEX  FILE".
fn digest_of(tool: &str, file: &Path) -> String {
    let o = Command::new(tool).arg(file).output().expect(tool);
    assert!(o.status.success(), "{tool}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

fn schema_valid(report: &Path) {
    let schema = repo().join("rules/report.schema.json");
    let o = Command::new("python3")
        .args([
            "-c",
            "import json,sys,jsonschema; jsonschema.validate(json.load(open(sys.argv[1])), json.load(open(sys.argv[2])))",
            &s(report),
            &s(&schema),
        ])
        .output()
        .expect("python3 with jsonschema (.ci/setup.sh)");
    assert!(
        o.status.success(),
        "report does not follow the schema: {}",
        text(&o)
    );
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
}

/// The README's main-job command: the shell block after "Run the main job", with
/// its continuation lines joined, split into words as a shell would (single and
/// double quotes, no expansions).
fn readme_main_job() -> Vec<String> {
    let readme = fs::read_to_string(repo().join("README.md")).unwrap();
    let at = readme
        .find("Run the main job on an image")
        .expect("README: the main job");
    let rest = &readme[at..];
    let start = rest.find("```sh\n").expect("a sh block") + 6;
    let end = start + rest[start..].find("```").unwrap();
    let cmd = rest[start..end].replace("\\\n", " ");
    let mut words = Vec::new();
    let mut w = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in cmd.trim().chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => w.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                any = true
            }
            (None, c) if c.is_whitespace() => {
                if any || !w.is_empty() {
                    words.push(std::mem::take(&mut w));
                    any = false;
                }
            }
            (None, c) => w.push(c),
        }
    }
    if any || !w.is_empty() {
        words.push(w);
    }
    words
}

#[test]
fn the_readme_main_job_succeeds_on_the_example_disk_and_the_upload_object_is_right() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sample = d.join("disk.qcow2");
    let o = Command::new("bash")
        .arg(repo().join("examples/make-sample-disk.sh"))
        .arg(&sample)
        .output()
        .unwrap();
    assert!(o.status.success(), "make-sample-disk.sh: {}", text(&o));

    // Exactly the README's command, run where the sample is.
    let words = readme_main_job();
    assert_eq!(words[0], "target/release/imgsan", "{words:?}");
    assert_eq!(&words[1..4], ["sanitize", "disk.qcow2", "-o"], "{words:?}");
    assert!(words.iter().any(|w| w == "--name") && words.iter().any(|w| w == "--description"));
    let o = Command::new(env!("CARGO_BIN_EXE_imgsan"))
        .args(&words[1..])
        .current_dir(d)
        .env("CI", "1")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "README main job: {}", text(&o));
    let out = d.join(&words[4]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    // The text report ends with the upload command for the file written.
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap();
    assert!(
        last.starts_with(
            "openstack image create --disk-format raw --container-format bare --min-disk "
        ),
        "{stdout}"
    );
    assert!(last.contains(&format!("--file {}", words[4])), "{last}");

    // The same run with a JSON report: the upload object against md5sum, sha512sum
    // and the file's size.
    let report = d.join("report.json");
    let mut args: Vec<String> = words[1..].to_vec();
    args.extend([
        "--report".into(),
        s(&report),
        "--format".into(),
        "json".into(),
    ]);
    let o = Command::new(env!("CARGO_BIN_EXE_imgsan"))
        .args(&args)
        .current_dir(d)
        .env("CI", "1")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    schema_valid(&report);
    let r = json(&report);
    let u = &r["upload"];
    let len = fs::metadata(&out).unwrap().len();
    assert_eq!(u["checksum"], digest_of("md5sum", &out).as_str(), "{u:#}");
    assert_eq!(u["os_hash_value"], digest_of("sha512sum", &out).as_str());
    assert_eq!(u["os_hash_algo"], "sha512");
    assert_eq!(u["size_bytes"], len);
    assert_eq!(u["min_disk"], len.div_ceil(1 << 30));
    assert_eq!(u["disk_format"], "raw");
    assert_eq!(u["container_format"], "bare");
    let p = &u["properties"];
    assert_eq!(p["os_distro"], "ubuntu", "{u:#}");
    assert_eq!(p["os_version"], "24.04");
    assert_eq!(p["architecture"], "x86_64");
    // An EFI system partition, GRUB for EFI, and no BIOS boot code in the MBR.
    assert_eq!(p["hw_firmware_type"], "uefi", "{u:#}");
    assert_eq!(p["hw_qemu_guest_agent"], "yes");
    assert_eq!(p["hw_disk_bus"], "virtio");
    assert_eq!(
        p["description"],
        words[words.iter().position(|w| w == "--description").unwrap() + 1].as_str()
    );

    // The sample runs cloud-init's growpart and resizefs and has growpart: shrunk by
    // default, with a partition table that sgdisk finds valid.
    assert_eq!(u["shrink"]["shrunk"], true, "{u:#}");
    assert_eq!(u["shrink"]["reason"], "guest-grows-itself");
    assert!(len < 3 << 30, "shrunk: {len} bytes");
    let o = Command::new("sgdisk").arg("-v").arg(&out).output().unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("No problems found"),
        "{}",
        text(&o)
    );

    // --keep-size keeps it, and says so.
    let kept = d.join("kept.raw");
    let report2 = d.join("kept.json");
    let mut args: Vec<String> = words[1..].to_vec();
    args[3] = s(&kept);
    args.extend([
        "--keep-size".into(),
        "--report".into(),
        s(&report2),
        "--format".into(),
        "json".into(),
    ]);
    let o = Command::new(env!("CARGO_BIN_EXE_imgsan"))
        .args(&args)
        .current_dir(d)
        .env("CI", "1")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let u = &json(&report2)["upload"];
    assert_eq!(fs::metadata(&kept).unwrap().len(), 3 << 30);
    assert_eq!(u["shrink"]["shrunk"], false);
    assert_eq!(u["shrink"]["reason"], "kept-by-option");
    assert_eq!(u["min_disk"], 3);
    assert_eq!(u["checksum"], digest_of("md5sum", &kept).as_str());
    assert_eq!(u["os_hash_value"], digest_of("sha512sum", &kept).as_str());
}

/// A virtualenv with python-openstackclient, made once and kept under target/tmp.
fn openstack_venv() -> PathBuf {
    let venv = repo().join("target/tmp/openstackclient-venv");
    let py = venv.join("bin/python");
    let ok = |py: &Path| {
        Command::new(py)
            .args(["-c", "import openstackclient.image.v2.image"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !ok(&py) {
        let _ = fs::remove_dir_all(&venv);
        fs::create_dir_all(venv.parent().unwrap()).unwrap();
        let o = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .output()
            .unwrap();
        assert!(o.status.success(), "python3 -m venv: {}", text(&o));
        let o = Command::new(&py)
            .args(["-m", "pip", "install", "-q", "python-openstackclient"])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "pip install python-openstackclient: {}",
            text(&o)
        );
        assert!(ok(&py), "python-openstackclient imports");
    }
    py
}

/// Parses an `openstack image create ...` line with the client's own parser and
/// gives what it understood, as JSON.
fn parse_with_openstackclient(py: &Path, command: &str) -> serde_json::Value {
    let script = r#"
import json, shlex, sys
from openstackclient.image.v2 import image
words = shlex.split(sys.argv[1])
assert words[:3] == ["openstack", "image", "create"], words[:3]
parser = image.CreateImage(None, None).get_parser("openstack image create")
a = parser.parse_args(words[3:])
print(json.dumps({
    "name": a.name, "disk_format": a.disk_format, "container_format": a.container_format,
    "min_disk": a.min_disk, "file": a.filename, "properties": a.properties or {},
    "tags": a.tags or [], "visibility": a.visibility,
}))
"#;
    let o = Command::new(py)
        .args(["-c", script, command])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "openstackclient's parser refused {command:?}: {}",
        text(&o)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The eight guests of the fixture matrix: os_distro and os_version from their
/// os-release; shrunk exactly when the guest has growpart (cloud-init's growpart and
/// resizefs are configured in every fixture, the growpart program in none); the
/// upload command as python-openstackclient parses it.
#[test]
fn every_guest_gets_its_distro_and_version_and_shrinks_exactly_when_it_has_growpart() {
    let py = openstack_venv();
    let dir = tempfile::tempdir().unwrap();
    for (i, distro) in Distro::ALL.into_iter().enumerate() {
        let mut opts = GuestOptions::new(distro);
        // Root last on the disk, as cloud images have it: what growpart grows.
        opts.swap = false;
        let work = dir.path().join(distro.name());
        fs::create_dir_all(&work).unwrap();
        let tree = work.join("tree");
        fs::create_dir(&tree).unwrap();
        let g = guest::build(&tree, &opts);
        // Every other guest gets the growpart program.
        let with_growpart = i % 2 == 0;
        if with_growpart {
            let p = g.host_path("/usr/bin/growpart");
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, "#!/bin/sh\n# growpart (cloud-guest-utils)\n").unwrap();
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let img = work.join("in.raw");
        let packed = disk::pack(
            &g,
            &img,
            // 1 GiB holding a few MiB: shrinking gains more than its margin.
            &disk::DiskOptions {
                root_mib: Some(1024),
                ..Default::default()
            },
        );
        let out = work.join("out.raw");
        let report = work.join("report.json");
        let request = work.join("request.yaml");
        fs::write(
            &request,
            "version: 1\nkind: request\nname: Matrix-Image-v1\n\
             description: \"A guest of the fixture matrix, for the upload object's test\"\n\
             tags: [genomics, workshop]\nvisibility: specific-users\nusers: [alice]\n\
             installed_software:\n  - name: growpart\n    path: /usr/bin/growpart\n",
        )
        .unwrap();
        // --force: the two oldest Ubuntu releases are past their end of life.
        let o = imgsan(&[
            "sanitize",
            &s(&img),
            "-o",
            &s(&out),
            "--request",
            &s(&request),
            "--today",
            "2024-06-01",
            "--force",
            "--report",
            &s(&report),
            "--format",
            "json",
        ]);
        assert!(
            matches!(o.status.code(), Some(0 | 1)),
            "{}: {}",
            distro.name(),
            text(&o)
        );
        schema_valid(&report);
        let r = json(&report);
        let u = &r["upload"];
        let p = &u["properties"];
        assert_eq!(p["os_distro"], distro.os_id(), "{}: {u:#}", distro.name());
        assert_eq!(p["os_version"], distro.version_id(), "{}", distro.name());
        assert_eq!(p["architecture"], "x86_64", "{}", distro.name());
        assert_eq!(p["hw_disk_bus"], "virtio");
        let len = fs::metadata(&out).unwrap().len();
        assert_eq!(u["min_disk"], len.div_ceil(1 << 30), "{}", distro.name());
        assert_eq!(
            u["checksum"],
            digest_of("md5sum", &out).as_str(),
            "{}",
            distro.name()
        );
        assert_eq!(u["os_hash_value"], digest_of("sha512sum", &out).as_str());
        assert_eq!(u["installed_software"][0]["present"], with_growpart);
        let shrunk = u["shrink"]["shrunk"].as_bool().unwrap();
        assert_eq!(
            shrunk,
            with_growpart,
            "{}: {:#}",
            distro.name(),
            u["shrink"]
        );
        if with_growpart {
            assert_eq!(u["shrink"]["reason"], "guest-grows-itself");
            assert!(
                len < packed.size,
                "{}: {len} < {}",
                distro.name(),
                packed.size
            );
        } else {
            assert_eq!(u["shrink"]["reason"], "guest-does-not-grow");
            assert!(
                u["shrink"]["detail"]
                    .as_str()
                    .unwrap()
                    .contains("growpart program"),
                "{:#}",
                u["shrink"]
            );
            assert_eq!(len, packed.size, "{}", distro.name());
        }

        // The command, as the client understands it.
        let cmd = u["command"].as_str().unwrap();
        let a = parse_with_openstackclient(&py, cmd);
        assert_eq!(a["name"], "Matrix-Image-v1", "{cmd}");
        assert_eq!(a["disk_format"], "raw");
        assert_eq!(a["container_format"], "bare");
        assert_eq!(a["min_disk"], u["min_disk"]);
        assert_eq!(a["file"], s(&out).as_str());
        assert_eq!(a["visibility"], "shared", "{cmd}");
        assert_eq!(a["tags"], serde_json::json!(["genomics", "workshop"]));
        assert_eq!(&a["properties"], p, "{cmd}");
        assert_eq!(
            p["description"],
            "A guest of the fixture matrix, for the upload object's test"
        );
        assert_eq!(u["share_with"], serde_json::json!(["alice"]));
        fs::remove_dir_all(&work).unwrap();
    }
}

/// The request's `exclude` counts before the first check: licensed software only in
/// excluded places does not block (the rule `request-exclude` fixes it, and the
/// re-check confirms it is gone), so no --force is needed.
#[test]
fn request_excludes_apply_before_the_first_check() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = GuestOptions::new(Distro::Ubuntu2204);
    opts.licensed = true;
    opts.swap = false;
    let tree = dir.path().join("tree");
    fs::create_dir(&tree).unwrap();
    let g = guest::build(&tree, &opts);
    let img = dir.path().join("in.raw");
    disk::pack(&g, &img, &disk::DiskOptions::default());
    let request = dir.path().join("request.yaml");
    fs::write(
        &request,
        "version: 1\nkind: request\nname: Licensed-Tools-v1\n\
         description: \"Ubuntu 22.04 whose licensed tools the request excludes\"\n\
         exclude:\n  - /usr/local/MATLAB/**\n  - /usr/local/bin/matlab\n  - /opt/intel/**\n  - /opt/Nuke14.0v5/**\n",
    )
    .unwrap();
    let report = dir.path().join("report.json");
    let out = dir.path().join("out.raw");
    let o = imgsan(&[
        "sanitize",
        &s(&img),
        "-o",
        &s(&out),
        "--request",
        &s(&request),
        "--today",
        "2024-06-01",
        "--report",
        &s(&report),
        "--format",
        "json",
    ]);
    let r = json(&report);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}\n{:#}",
        text(&o),
        r["findings"]
    );
    let licensed: Vec<&serde_json::Value> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check_id"].as_str().unwrap().starts_with("software.l"))
        .collect();
    assert!(
        !licensed.is_empty(),
        "the fixture's licensed software is found"
    );
    for f in &licensed {
        assert_eq!(f["fixed_by_sanitize"], "request-exclude", "{f:#}");
    }
    let again = r["recheck"]["findings"].as_array().unwrap();
    assert!(
        again
            .iter()
            .all(|f| !f["check_id"].as_str().unwrap().starts_with("software.l")),
        "{again:#?}"
    );

    // A blocked dry run with --force says nothing about writing.
    let o = imgsan(&[
        "sanitize",
        &s(&img),
        "--dry-run",
        "--force",
        "--today",
        "2024-06-01",
    ]);
    let all = text(&o);
    assert!(!all.contains("written despite"), "{all}");
    assert!(all.contains("dry run"), "{all}");
}
