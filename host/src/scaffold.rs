//! `courier new NAME --lang rust|python|js|c`: a plugin project that builds and has a passing
//! test out of the box, and `courier component new`: a core WebAssembly module (what clang
//! makes of a C plugin) turned into a Courier component.
//!
//! A project carries the SDK of its language and the WIT contract in `sdk/`, laid out as in the
//! Courier repository (`sdk/wit`, `sdk/guest-sdk/<language>`), so the SDKs' own relative paths
//! hold and the project builds wherever it is put, with that language's toolchain alone. The
//! files are the ones this `courier` was built with, embedded in the binary. Every project has
//! the same plugin: it handles the command `urn:message:<Namespace>:SayHello` (`{ name }`) and
//! publishes the event `urn:message:<Namespace>:Greeted` (`{ text }`), where `<Namespace>` is
//! the name in PascalCase; its decision is a function of its own, which the unit test checks.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

/// The language of a new plugin project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    Rust,
    #[value(alias = "py")]
    Python,
    #[value(alias = "javascript")]
    Js,
    C,
}

impl Language {
    pub const ALL: [Language; 4] = [Language::Rust, Language::Python, Language::Js, Language::C];

    pub fn name(self) -> &'static str {
        match self {
            Language::Rust => "rust",
            Language::Python => "python",
            Language::Js => "js",
            Language::C => "c",
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A file of the repository, embedded: its path there and its text.
macro_rules! repository_files {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!("../../", $path)))),*]
    };
}

/// A template of `host/templates/new/<language>/`: its path in the project, and its text.
macro_rules! templates {
    ($language:literal: $($path:literal => $file:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!("../templates/new/", $language, "/", $file)))),*]
    };
}

type Files = &'static [(&'static str, &'static str)];

const WIT: Files = repository_files!["wit/courier.wit"];

const RUST_SDK: Files = repository_files![
    "guest-sdk/rust/src/lib.rs",
    "guest-sdk/rust/src/codec.rs",
    "guest-sdk/rust/src/context.rs",
    "guest-sdk/rust/src/error.rs",
    "guest-sdk/rust/src/export.rs",
    "guest-sdk/rust/macros/src/lib.rs",
];

/// The SDK's manifests, which inherit from the Courier workspace: written with what they
/// inherit filled in (see [`standalone_manifest`]).
const RUST_MANIFESTS: Files = repository_files![
    "guest-sdk/rust/Cargo.toml",
    "guest-sdk/rust/macros/Cargo.toml"
];

const WORKSPACE_MANIFEST: &str = include_str!("../../Cargo.toml");

/// The lockfile of this repository's Rust plugins, which use the SDK as a project does: a
/// Rust project starts from it, so it builds with the versions those plugins are tested with
/// (cargo drops the entries the project does not use).
const PLUGINS_LOCK: &str = include_str!("../../plugins/Cargo.lock");

/// The Rust release Courier is built with, which a Rust project pins too.
const TOOLCHAIN: &str = include_str!("../../rust-toolchain.toml");

const PYTHON_SDK: Files = repository_files![
    "guest-sdk/python/courier/__init__.py",
    "guest-sdk/python/courier/core.py",
    "guest-sdk/python/requirements.txt",
    "guest-sdk/python/requirements-build.txt",
];

const JS_SDK: Files = repository_files![
    "guest-sdk/js/src/core.js",
    "guest-sdk/js/src/index.js",
    "guest-sdk/js/build.mjs",
    "guest-sdk/js/package.json",
];

const JS_SDK_PACKAGE: &str = include_str!("../../guest-sdk/js/package.json");

const C_SDK: Files = repository_files![
    "guest-sdk/c/include/courier.h",
    "guest-sdk/c/src/internal.h",
    "guest-sdk/c/src/courier.c",
    "guest-sdk/c/src/value.c",
    "guest-sdk/c/bindings/plugin.c",
    "guest-sdk/c/bindings/plugin.h",
];

const RUST_TEMPLATES: Files = templates!["rust":
    "Cargo.toml" => "Cargo.toml",
    "rust-toolchain.toml" => "rust-toolchain.toml",
    "src/lib.rs" => "src/lib.rs",
    "README.md" => "README.md",
    ".gitignore" => "gitignore",
];

const PYTHON_TEMPLATES: Files = templates!["python":
    "src/app.py" => "src/app.py",
    "src/greeting.py" => "src/greeting.py",
    "test_greeting.py" => "test_greeting.py",
    "plugin.toml" => "plugin.toml",
    "build.sh" => "build.sh",
    "test.sh" => "test.sh",
    "tools.sh" => "tools.sh",
    "README.md" => "README.md",
    ".gitignore" => "gitignore",
];

const JS_TEMPLATES: Files = templates!["js":
    "index.js" => "index.js",
    "greeting.js" => "greeting.js",
    "greeting.test.js" => "greeting.test.js",
    "plugin.toml" => "plugin.toml",
    "README.md" => "README.md",
    ".gitignore" => "gitignore",
];

const C_TEMPLATES: Files = templates!["c":
    "handler.c" => "handler.c",
    "greeting.c" => "greeting.c",
    "greeting.h" => "greeting.h",
    "test_greeting.c" => "test_greeting.c",
    "build.sh" => "build.sh",
    "test.sh" => "test.sh",
    "README.md" => "README.md",
    ".gitignore" => "gitignore",
];

/// Names a project may not have: Rust's own crates, the SDK's crates (which are in the
/// project's workspace), and names a Windows directory cannot have.
const RESERVED: [&str; 14] = [
    "alloc",
    "core",
    "std",
    "test",
    "proc-macro",
    "self",
    "super",
    "crate",
    "courier-sdk",
    "courier-sdk-macros",
    "con",
    "prn",
    "aux",
    "nul",
];

/// The names a project may have: a plugin name that is also a Rust crate, an npm package name
/// and a directory anywhere; words of a-z and 0-9 joined by single `-`, so that each name has
/// a namespace of its own.
fn check_name(name: &str) -> Result<()> {
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.split('-').all(|word| {
            !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        });
    if !valid {
        bail!(
            "`{name}` cannot name a plugin project: use words of a-z and 0-9 joined by single \
             `-`, starting with a letter, 64 characters at most"
        );
    }
    let device = |prefix: &str| {
        name.strip_prefix(prefix)
            .is_some_and(|n| n.len() == 1 && n.as_bytes()[0].is_ascii_digit())
    };
    if RESERVED.contains(&name) || device("com") || device("lpt") {
        bail!("`{name}` cannot name a plugin project: the name is reserved");
    }
    Ok(())
}

/// `greeter` → `Greeter`, `order-audit` → `OrderAudit`: the namespace of the project's
/// message types.
fn namespace(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// Creates the project `parent/name`, which must not exist yet; returns its directory. The
/// project is written into a temporary directory beside it and renamed into place, so a failure
/// leaves nothing behind.
pub fn create(name: &str, language: Language, parent: &Path) -> Result<PathBuf> {
    check_name(name)?;
    let dir = parent.join(name);
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    let files = project_files(name, language)?;
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .tempdir_in(parent)
        .with_context(|| format!("cannot write into {}", parent.display()))?;
    for (path, text) in &files {
        let file = staging.path().join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
        if path.ends_with(".sh") {
            make_executable(&file)?;
        }
    }
    // `rename` onto a directory that appeared meanwhile fails unless that one is empty; it
    // never merges into one.
    std::fs::rename(staging.path(), &dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    // The staging directory is gone: nothing is left for its guard to remove.
    let _ = staging.keep();
    Ok(dir)
}

/// The fields a template is filled with, each written `{{field}}`.
fn fields(name: &str) -> Result<[(&'static str, String); 6]> {
    let toolchain: toml::Table = TOOLCHAIN.parse()?;
    let workspace: toml::Table = WORKSPACE_MANIFEST.parse()?;
    let text = |value: Option<&toml::Value>, what: &str| {
        value
            .and_then(toml::Value::as_str)
            .map(str::to_owned)
            .with_context(|| format!("Courier was built without {what}"))
    };
    Ok([
        ("name", name.to_owned()),
        ("crate", name.replace('-', "_")),
        ("Namespace", namespace(name)),
        ("version", env!("CARGO_PKG_VERSION").to_owned()),
        (
            "toolchain",
            text(
                toolchain.get("toolchain").and_then(|t| t.get("channel")),
                "a toolchain channel",
            )?,
        ),
        (
            "rust_version",
            text(
                workspace
                    .get("workspace")
                    .and_then(|w| w.get("package"))
                    .and_then(|p| p.get("rust-version")),
                "a rust-version",
            )?,
        ),
    ])
}

/// Every file of the project: its path in the project and its text.
fn project_files(name: &str, language: Language) -> Result<Vec<(String, String)>> {
    let fields = fields(name)?;
    let fill = |text: &str| {
        fields.iter().fold(text.to_owned(), |text, (field, value)| {
            text.replace(&format!("{{{{{field}}}}}"), value)
        })
    };
    let mut files: Vec<(String, String)> = Vec::new();
    let mut vendor = |set: Files| {
        for (path, text) in set {
            files.push((format!("sdk/{path}"), (*text).to_owned()));
        }
    };
    vendor(WIT);
    let templates = match language {
        Language::Rust => {
            vendor(RUST_SDK);
            for (path, text) in RUST_MANIFESTS {
                files.push((format!("sdk/{path}"), standalone_manifest(text)?));
            }
            files.push(("Cargo.lock".into(), PLUGINS_LOCK.to_owned()));
            RUST_TEMPLATES
        }
        Language::Python => {
            vendor(PYTHON_SDK);
            PYTHON_TEMPLATES
        }
        Language::Js => {
            vendor(JS_SDK);
            files.push(("package.json".into(), js_package(name)?));
            JS_TEMPLATES
        }
        Language::C => {
            vendor(C_SDK);
            C_TEMPLATES
        }
    };
    for (path, text) in templates {
        files.push(((*path).to_owned(), fill(text)));
    }
    Ok(files)
}

/// What to do next, as the project's README says it.
pub fn next_steps(language: Language) -> &'static str {
    match language {
        Language::Rust => "cargo test && cargo build --release --target wasm32-wasip2",
        Language::Python => "./test.sh && ./build.sh",
        Language::Js => "npm install && npm test && npm run build",
        Language::C => "./test.sh && ./build.sh",
    }
}

#[cfg(unix)]
fn make_executable(file: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} executable", file.display()))
}

#[cfg(not(unix))]
fn make_executable(_file: &Path) -> Result<()> {
    Ok(())
}

/// A manifest of the Rust SDK with what it inherits from the Courier workspace written out,
/// so that it builds in a workspace of its own: an inherited dependency is the workspace's,
/// with the keys the manifest gives beside `workspace = true` laid over it (its features
/// added to the workspace's), as cargo does. Its lints and its dev-dependencies (the SDK's own
/// tests) are left out.
fn standalone_manifest(text: &str) -> Result<String> {
    let workspace: toml::Table = WORKSPACE_MANIFEST.parse()?;
    let inherited = |section: &str| {
        workspace
            .get("workspace")
            .and_then(|w| w.get(section))
            .and_then(toml::Value::as_table)
            .cloned()
            .unwrap_or_default()
    };
    let (package_fields, dependencies) = (inherited("package"), inherited("dependencies"));
    let mut manifest: toml::Table = text.parse()?;
    manifest.remove("lints");
    manifest.remove("dev-dependencies");
    if let Some(package) = manifest
        .get_mut("package")
        .and_then(toml::Value::as_table_mut)
    {
        for (key, value) in package.iter_mut() {
            if is_inherited(value) {
                *value = package_fields
                    .get(key)
                    .cloned()
                    .with_context(|| format!("the workspace has no package.{key}"))?;
            }
        }
    }
    if let Some(deps) = manifest
        .get_mut("dependencies")
        .and_then(toml::Value::as_table_mut)
    {
        for (name, value) in deps.iter_mut() {
            if is_inherited(value) {
                let inherited = dependencies
                    .get(name)
                    .with_context(|| format!("the workspace has no dependency {name}"))?;
                *value = overlay(inherited, value);
            }
        }
    }
    Ok(toml::to_string(&manifest)?)
}

/// The workspace's `inherited` dependency with a member's own keys (`local`) laid over it.
fn overlay(inherited: &toml::Value, local: &toml::Value) -> toml::Value {
    let mut merged = match inherited {
        toml::Value::String(version) => {
            let mut table = toml::Table::new();
            table.insert("version".into(), toml::Value::String(version.clone()));
            table
        }
        other => other.as_table().cloned().unwrap_or_default(),
    };
    for (key, value) in local.as_table().into_iter().flatten() {
        match (key.as_str(), merged.get_mut(key)) {
            ("workspace", _) => {}
            ("features", Some(toml::Value::Array(features))) => {
                for feature in value.as_array().into_iter().flatten() {
                    if !features.contains(feature) {
                        features.push(feature.clone());
                    }
                }
            }
            _ => {
                merged.insert(key.clone(), value.clone());
            }
        }
    }
    toml::Value::Table(merged)
}

fn is_inherited(value: &toml::Value) -> bool {
    value
        .get("workspace")
        .and_then(toml::Value::as_bool)
        .unwrap_or(false)
}

/// The project's `package.json`: the SDK's dependencies at the versions it pins.
fn js_package(name: &str) -> Result<String> {
    let sdk: serde_json::Value = serde_json::from_str(JS_SDK_PACKAGE)?;
    let package = serde_json::json!({
        "name": name,
        "version": "0.1.0",
        "private": true,
        "type": "module",
        "scripts": {
            "build": format!(
                "node sdk/guest-sdk/js/build.mjs index.js {name}.wasm && node -e \"require('fs').copyFileSync('plugin.toml', '{name}.toml')\""
            ),
            "test": "node --test",
        },
        "engines": sdk["engines"],
        "dependencies": sdk["dependencies"],
        "devDependencies": sdk["devDependencies"],
    });
    Ok(serde_json::to_string_pretty(&package)? + "\n")
}

/// The Courier contract, as `courier component new` embeds it.
const COURIER_WIT: &str = include_str!("../../wit/courier.wit");

/// A core module that implements the `plugin` world (compiled by clang against the C SDK, say)
/// made a component (see `courier_componentize`).
pub fn component_from_module(module: &[u8]) -> Result<Vec<u8>> {
    let mut resolve = wit_parser::Resolve::default();
    let package = resolve.push_str("courier.wit", COURIER_WIT)?;
    let world = resolve.select_world(&[package], Some("plugin"))?;
    courier_componentize::component_from_module(&resolve, world, module)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_namespaces() {
        assert_eq!(namespace("greeter"), "Greeter");
        assert_eq!(namespace("order-audit-2"), "OrderAudit2");
        for good in ["greeter", "order-audit", "a1"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Greeter",
            "1st",
            "-a",
            "a-",
            "a--b",
            "a_b",
            "a.b",
            "test",
            "courier-sdk",
            "com3",
            &"a".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    /// A Rust project starts from the plugins' lockfile.
    #[test]
    fn a_rust_project_starts_from_the_plugins_lockfile() {
        let files = project_files("greeter", Language::Rust).unwrap();
        let lock = files.iter().find(|(path, _)| path == "Cargo.lock");
        assert_eq!(lock.map(|(_, text)| text.as_str()), Some(PLUGINS_LOCK));
    }

    /// Every template field is filled, in every language.
    #[test]
    fn no_field_is_left_unfilled() {
        for language in Language::ALL {
            for (path, text) in project_files("order-audit", language).unwrap() {
                let mut rest = text.as_str();
                while let Some(start) = rest.find("{{") {
                    let field = &rest[start + 2..];
                    let end = field.find("}}").unwrap_or(field.len());
                    assert!(
                        !field[..end]
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_'),
                        "{language}: {path} leaves {{{{{}}}}}",
                        &field[..end]
                    );
                    rest = &field[end..];
                }
            }
        }
    }

    /// What a project vendors is every source file of its SDK (tests and build artefacts
    /// aside): a file added to an SDK must be added to its list here.
    #[test]
    fn every_sdk_source_is_vendored() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let lists: [(&[&str], Vec<Files>); 4] = [
            (
                &["guest-sdk/rust/src", "guest-sdk/rust/macros/src"],
                vec![RUST_SDK, RUST_MANIFESTS],
            ),
            (&["guest-sdk/python/courier"], vec![PYTHON_SDK]),
            (&["guest-sdk/js/src"], vec![JS_SDK]),
            (
                &[
                    "guest-sdk/c/include",
                    "guest-sdk/c/src",
                    "guest-sdk/c/bindings",
                ],
                vec![C_SDK],
            ),
        ];
        for (dirs, files) in lists {
            let vendored: Vec<&str> = files
                .iter()
                .flat_map(|f| f.iter().map(|(p, _)| *p))
                .collect();
            for dir in dirs {
                for entry in std::fs::read_dir(root.join(dir)).unwrap() {
                    let path = entry.unwrap().path();
                    if path.is_file() {
                        let relative =
                            format!("{dir}/{}", path.file_name().unwrap().to_string_lossy());
                        assert!(vendored.contains(&relative.as_str()), "{relative}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_sdk_manifests_stand_alone() {
        for (path, text) in RUST_MANIFESTS {
            let manifest = standalone_manifest(text).unwrap();
            assert!(!manifest.contains("workspace"), "{path}:\n{manifest}");
            let parsed: toml::Table = manifest.parse().unwrap();
            assert!(parsed["package"].get("edition").is_some(), "{path}");
        }
    }
}
