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
use std::str::FromStr;

use anyhow::{Context as _, Result, anyhow, bail};

/// The language of a new plugin project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    Rust,
    Python,
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

impl FromStr for Language {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        Language::ALL
            .into_iter()
            .find(|language| language.name() == text)
            .ok_or_else(|| anyhow!("unknown language `{text}`: use rust, python, js or c"))
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
    "app.py" => "app.py",
    "greeting.py" => "greeting.py",
    "test_greeting.py" => "test_greeting.py",
    "plugin.toml" => "plugin.toml",
    "build.sh" => "build.sh",
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

/// The names a project may have: a plugin name that is also a Rust crate, a Python module
/// directory and an npm package name.
fn check_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let valid = name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        bail!(
            "`{name}` cannot name a plugin project: use 1 to 64 of a-z, 0-9 and `-`, starting \
             with a letter"
        );
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

/// Creates the project `parent/name`, which must not exist yet; returns its directory.
pub fn create(name: &str, language: Language, parent: &Path) -> Result<PathBuf> {
    check_name(name)?;
    let dir = parent.join(name);
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{Namespace}}", &namespace(name))
            .replace("{{version}}", env!("CARGO_PKG_VERSION"))
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

    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (path, text) in &files {
        let file = dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
        if path.ends_with(".sh") {
            make_executable(&file)?;
        }
    }
    Ok(dir)
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
/// so that it builds in a workspace of its own. Its lints and its dev-dependencies (the SDK's
/// own tests) are left out.
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
                *value = dependencies
                    .get(name)
                    .cloned()
                    .with_context(|| format!("the workspace has no dependency {name}"))?;
            }
        }
    }
    Ok(toml::to_string(&manifest)?)
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
                "node sdk/guest-sdk/js/build.mjs index.js {name}.wasm && cp plugin.toml {name}.toml"
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
        for bad in ["", "Greeter", "1st", "-a", "a_b", "a.b", &"a".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
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
