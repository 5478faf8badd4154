//! The plugins written in Python (`plugins/python/<name>/app.py`) and JavaScript
//! (`plugins/js/<name>/index.js`), built into `target/polyglot/<language>/<name>.wasm` with the
//! language's own toolchain, each with its sidecar settings (`plugin.toml` in its directory)
//! copied beside it as `<name>.toml`.
//!
//! The toolchains are installed under `target/polyglot` on first use, at the versions pinned
//! in the repository, so a fresh machine needs only `python3` (with `venv` and `pip`) and
//! `node` with `npm`:
//! - Python: a virtual environment with `guest-sdk/python/requirements-build.txt`
//!   (componentize-py), and the packages a plugin may import (`requirements.txt`: msgpack)
//!   installed apart, so that only they are bundled into the component;
//! - JavaScript: `npm ci` in `guest-sdk/js` from its committed lockfile.
//!
//! A component is rebuilt only when a file it is built from is newer than it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::SystemTime;

use anyhow::{Context as _, Result, bail};

/// Builds every Python and JavaScript plugin that is out of date, and puts every plugin's
/// sidecar settings beside its component.
pub fn build(root: &Path) -> Result<()> {
    let out = root.join("target/polyglot");
    let python = python_plugins(root)?;
    let js = js_plugins(root)?;
    let python_pending = out_of_date(&python, &out.join("python"), &python_inputs(root));
    let js_pending = out_of_date(&js, &out.join("js"), &js_inputs(root));
    for (language, names) in [("python", &python), ("js", &js)] {
        let dir = out.join(language);
        std::fs::create_dir_all(&dir)?;
        for name in names {
            copy_sidecar(&root.join("plugins").join(language).join(name), &dir, name)?;
        }
    }
    if python_pending.is_empty() && js_pending.is_empty() {
        return Ok(());
    }
    if !python_pending.is_empty() {
        ensure_python_tools(root, &out)?;
    }
    if !js_pending.is_empty() {
        ensure_js_tools(root)?;
    }
    // componentize-py and componentize-js each keep about one core busy: build a Python and a
    // JavaScript component side by side.
    let mut python_queue = python_pending.into_iter();
    let mut js_queue = js_pending.into_iter();
    loop {
        let mut running: Vec<(String, Child)> = Vec::new();
        if let Some(name) = python_queue.next() {
            running.push((format!("python/{name}"), spawn_python(root, &out, &name)?));
        }
        if let Some(name) = js_queue.next() {
            running.push((format!("js/{name}"), spawn_js(root, &out, &name)?));
        }
        if running.is_empty() {
            return Ok(());
        }
        // Wait for every build of the round before reporting one that failed, so that none is
        // left writing into `target/`.
        let mut failed = Vec::new();
        for (what, mut child) in running {
            match child.wait() {
                Ok(status) if status.success() => {
                    // Built under a temporary name, so that a build cut short never leaves a
                    // component that looks up to date.
                    let built = out.join(format!("{what}.wasm"));
                    std::fs::rename(partial(&built), &built)
                        .with_context(|| format!("cannot put {} in place", built.display()))?;
                    eprintln!("built target/polyglot/{what}.wasm");
                }
                Ok(status) => failed.push(format!("{what} ({status})")),
                Err(error) => failed.push(format!("{what} ({error})")),
            }
        }
        if !failed.is_empty() {
            bail!("building the plugin(s) {} failed", failed.join(", "));
        }
    }
}

/// The Python and JavaScript SDKs' own unit tests, in the toolchains `build` installed.
pub fn unit_tests(root: &Path) -> Result<()> {
    ensure_python_tools(root, &root.join("target/polyglot"))?;
    ensure_js_tools(root)?;
    eprintln!("unit tests of the Python SDK ...");
    run(
        Command::new(venv_bin(&root.join("target/polyglot"), "python"))
            .args(["-m", "unittest", "discover", "--quiet", "-s"])
            .arg(root.join("guest-sdk/python/tests")),
    )?;
    eprintln!("unit tests of the JavaScript SDK ...");
    // The files are named: from Node 21 on, `node --test DIR` takes a directory for a file.
    let mut tests: Vec<PathBuf> = std::fs::read_dir(root.join("guest-sdk/js/test"))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.to_string_lossy().ends_with(".test.js"))
        .collect();
    tests.sort();
    run(Command::new("node")
        .arg("--test")
        .args(&tests)
        .current_dir(root))
}

/// The compiled Python or JavaScript plugin `name`.
pub fn plugin_file(root: &Path, language: &str, name: &str) -> PathBuf {
    root.join("target/polyglot")
        .join(language)
        .join(format!("{name}.wasm"))
}

fn python_plugins(root: &Path) -> Result<Vec<String>> {
    plugin_dirs(&root.join("plugins/python"), "app.py")
}

fn js_plugins(root: &Path) -> Result<Vec<String>> {
    plugin_dirs(&root.join("plugins/js"), "index.js")
}

/// The subdirectories of `dir` that hold `entry`.
pub(crate) fn plugin_dirs(dir: &Path, entry: &str) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for item in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = item?.path();
        if path.join(entry).is_file()
            && let Some(name) = path.file_name().and_then(|n| n.to_str())
        {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// What every Python plugin is built from. All of `plugins/python` is on every plugin's
/// Python path, so a change anywhere in it rebuilds them all.
fn python_inputs(root: &Path) -> Vec<PathBuf> {
    vec![
        root.join("wit"),
        root.join("guest-sdk/python/courier"),
        root.join("guest-sdk/python/requirements.txt"),
        root.join("guest-sdk/python/requirements-build.txt"),
        root.join("plugins/python"),
    ]
}

/// What every JavaScript plugin is built from. A plugin may import any module under
/// `plugins/js` (the bundler follows its imports), so a change anywhere in it rebuilds them all.
fn js_inputs(root: &Path) -> Vec<PathBuf> {
    vec![
        root.join("wit"),
        root.join("guest-sdk/js/src"),
        root.join("guest-sdk/js/build.mjs"),
        root.join("guest-sdk/js/package-lock.json"),
        root.join("plugins/js"),
    ]
}

/// The plugins whose component is missing or older than a file it is built from.
pub(crate) fn out_of_date(names: &[String], out: &Path, inputs: &[PathBuf]) -> Vec<String> {
    let inputs = inputs
        .iter()
        .map(|path| newest(path))
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    names
        .iter()
        .filter(|name| {
            let built = std::fs::metadata(out.join(format!("{name}.wasm")))
                .and_then(|meta| meta.modified())
                .ok();
            built.is_none_or(|built| built < inputs)
        })
        .cloned()
        .collect()
}

/// The newest modification time of a file, or of anything under a directory.
fn newest(path: &Path) -> SystemTime {
    let Ok(meta) = std::fs::metadata(path) else {
        return SystemTime::UNIX_EPOCH;
    };
    let own = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    if !meta.is_dir() {
        return own;
    }
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        // Sidecar settings are copied on every build and are not built into a component.
        .filter(|entry| {
            !["__pycache__", "node_modules", "plugin.toml"]
                .contains(&entry.file_name().to_str().unwrap_or_default())
        })
        .map(|entry| newest(&entry.path()))
        .fold(own, SystemTime::max)
}

fn venv_bin(out: &Path, tool: &str) -> PathBuf {
    out.join("venv/bin").join(tool)
}

/// The virtual environment with componentize-py, and the packages bundled into Python
/// plugins, at the pinned versions.
fn ensure_python_tools(root: &Path, out: &Path) -> Result<()> {
    let sdk = root.join("guest-sdk/python");
    let stamp = out.join("python-tools.stamp");
    let wanted = format!(
        "{}\n{}",
        read(&sdk.join("requirements-build.txt"))?,
        read(&sdk.join("requirements.txt"))?
    );
    let deps = out.join("python-deps");
    if std::fs::read_to_string(&stamp).is_ok_and(|have| have == wanted)
        && venv_bin(out, "componentize-py").is_file()
        && deps.is_dir()
    {
        return Ok(());
    }
    eprintln!("installing the Python plugin toolchain under target/polyglot ...");
    std::fs::create_dir_all(out)?;
    run(Command::new("python3")
        .args(["-m", "venv"])
        .arg(out.join("venv")))
    .context("python3 with the venv module is needed to build the Python plugins")?;
    let pip = venv_bin(out, "pip");
    run(Command::new(&pip)
        .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(sdk.join("requirements-build.txt"))
        .arg("-r")
        .arg(sdk.join("requirements.txt")))?;
    // What a plugin may import goes into a directory of its own, given to componentize-py.
    // Native extensions cannot load inside a component: msgpack falls back to its pure-Python
    // implementation, and the shared objects are removed so they are not bundled.
    if deps.exists() {
        std::fs::remove_dir_all(&deps)?;
    }
    run(Command::new(&pip)
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--target",
        ])
        .arg(&deps)
        .arg("-r")
        .arg(sdk.join("requirements.txt")))?;
    remove_native_extensions(&deps)?;
    std::fs::write(&stamp, wanted)?;
    Ok(())
}

fn remove_native_extensions(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            remove_native_extensions(&path)?;
        } else if path.extension().is_some_and(|ext| ext == "so") {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// `npm ci` in `guest-sdk/js` when its packages are missing or older than the lockfile.
fn ensure_js_tools(root: &Path) -> Result<()> {
    let sdk = root.join("guest-sdk/js");
    let installed = sdk.join("node_modules/.package-lock.json");
    if newest(&installed) >= newest(&sdk.join("package-lock.json")) {
        return Ok(());
    }
    eprintln!("installing the JavaScript plugin toolchain (npm ci in guest-sdk/js) ...");
    run(Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&sdk))
    .context("node and npm are needed to build the JavaScript plugins")
}

fn spawn_python(root: &Path, out: &Path, name: &str) -> Result<Child> {
    let dir = out.join("python");
    let sources = root.join("plugins/python");
    Command::new(venv_bin(out, "componentize-py"))
        .arg("--wit-path")
        .arg(root.join("wit"))
        .args(["--world", "plugin", "componentize"])
        .arg("--python-path")
        .arg(sources.join(name))
        .arg("--python-path")
        .arg(&sources)
        .arg("--python-path")
        .arg(root.join("guest-sdk/python"))
        .arg("--python-path")
        .arg(out.join("python-deps"))
        .arg("app")
        .arg("--output")
        .arg(partial(&dir.join(format!("{name}.wasm"))))
        .current_dir(root)
        .spawn()
        .context("cannot run componentize-py")
}

fn spawn_js(root: &Path, out: &Path, name: &str) -> Result<Child> {
    let dir = out.join("js");
    Command::new("node")
        .arg(root.join("guest-sdk/js/build.mjs"))
        .arg(root.join("plugins/js").join(name).join("index.js"))
        .arg(partial(&dir.join(format!("{name}.wasm"))))
        .current_dir(root)
        .spawn()
        .context("cannot run node")
}

/// Where the component `file` is written before it is complete.
fn partial(file: &Path) -> PathBuf {
    file.with_extension("wasm.partial")
}

/// `plugin.toml` beside the sources becomes `<name>.toml` beside the component; without one,
/// a stale copy is removed.
pub(crate) fn copy_sidecar(sources: &Path, out: &Path, name: &str) -> Result<()> {
    let sidecar = sources.join("plugin.toml");
    let target = out.join(format!("{name}.toml"));
    if sidecar.is_file() {
        std::fs::copy(&sidecar, &target)
            .with_context(|| format!("cannot copy {}", sidecar.display()))?;
    } else if target.exists() {
        std::fs::remove_file(&target)?;
    }
    Ok(())
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

pub(crate) fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot run {:?}", command.get_program()))?;
    if !status.success() {
        bail!("{command:?} failed ({status})");
    }
    Ok(())
}
