//! The plugins written in C (`plugins/c/<name>/*.c`), built into
//! `target/polyglot/c/<name>.wasm`, each with its sidecar settings (`plugin.toml`) copied
//! beside it as `<name>.toml`.
//!
//! A C plugin is compiled and linked by clang 16 into a WASI preview 1 reactor module together
//! with the C SDK (`guest-sdk/c/src`) and the bindings generated from `wit/`
//! (`guest-sdk/c/bindings`, committed). The module is then made a component here: the
//! `courier:bus` world is embedded into it and its preview 1 imports are adapted to WASI 0.2
//! by the adapter built for the host's wasmtime. No tool beyond Debian's clang, lld and
//! wasi-libc is needed.
//!
//! The bindings are regenerated with `cargo xtask c-bindings`; `cargo xtask test` fails when
//! the committed ones differ from what `wit/` gives.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use wit_bindgen_core::Files;
use wit_parser::{Resolve, WorldId};

use crate::polyglot;

/// The world every Courier plugin targets.
const WORLD: &str = "plugin";

/// The C compiler: Debian's `clang-16` unless `COURIER_CLANG` names another (16 or later,
/// with a `wasm32-wasi` sysroot).
fn clang() -> String {
    std::env::var("COURIER_CLANG").unwrap_or_else(|_| "clang-16".to_owned())
}

fn bindings_dir(root: &Path) -> PathBuf {
    root.join("guest-sdk/c/bindings")
}

fn world(root: &Path) -> Result<(Resolve, WorldId)> {
    let mut resolve = Resolve::default();
    let (package, _) = resolve
        .push_dir(root.join("wit"))
        .context("cannot read wit/")?;
    let world = resolve.select_world(&[package], Some(WORLD))?;
    Ok((resolve, world))
}

/// The bindings `wit/` gives, as (file name, contents).
fn generate(root: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let (mut resolve, world) = world(root)?;
    let options = wit_bindgen_c::Opts {
        // The world's type information is embedded into the linked module here, rather than
        // linked from an object file that would have to be committed.
        no_object_file: true,
        ..Default::default()
    };
    let mut files = Files::default();
    options
        .build()
        .generate(&mut resolve, world, &mut files)
        .context("cannot generate the C bindings")?;
    Ok(files
        .iter()
        .map(|(name, contents)| (name.to_owned(), contents.to_vec()))
        .collect())
}

/// `cargo xtask c-bindings`: writes the bindings into `guest-sdk/c/bindings`.
pub fn write_bindings(root: &Path) -> Result<()> {
    let dir = bindings_dir(root);
    std::fs::create_dir_all(&dir)?;
    for (name, contents) in generate(root)? {
        std::fs::write(dir.join(&name), contents)?;
        eprintln!("wrote guest-sdk/c/bindings/{name}");
    }
    Ok(())
}

/// Fails when the committed bindings are not what `wit/` gives.
pub fn check_bindings(root: &Path) -> Result<()> {
    let dir = bindings_dir(root);
    for (name, contents) in generate(root)? {
        let committed = std::fs::read(dir.join(&name)).unwrap_or_default();
        if committed != contents {
            bail!(
                "guest-sdk/c/bindings/{name} is not what wit/ gives: run `cargo xtask c-bindings` \
                 and commit the result"
            );
        }
    }
    Ok(())
}

/// Builds every C plugin that is out of date, and puts every plugin's sidecar settings beside
/// its component.
pub fn build(root: &Path) -> Result<()> {
    // Stale bindings would fail below in a way that does not say why.
    check_bindings(root)?;
    let out = root.join("target/polyglot/c");
    std::fs::create_dir_all(&out)?;
    let names = polyglot::plugin_dirs(&root.join("plugins/c"), "handler.c")?;
    for name in &names {
        polyglot::copy_sidecar(&root.join("plugins/c").join(name), &out, name)?;
    }
    // The recipe is an input too: the flags below, how a module is made a component, and the
    // adapter's and wit-component's versions in the lockfile. A rebuild takes a fraction of a
    // second.
    let inputs = [
        root.join("wit"),
        root.join("guest-sdk/c/include"),
        root.join("guest-sdk/c/src"),
        root.join("guest-sdk/c/bindings"),
        root.join("plugins/c"),
        root.join("xtask/src/c.rs"),
        root.join("componentize/src"),
        root.join("Cargo.lock"),
    ];
    let pending = polyglot::out_of_date(&names, &out, &inputs);
    if pending.is_empty() {
        return Ok(());
    }
    ensure_clang()?;
    let (resolve, world) = world(root)?;
    for name in pending {
        let component = out.join(format!("{name}.wasm"));
        let module = out.join(format!("{name}.core.wasm"));
        compile(root, &root.join("plugins/c").join(&name), &module)?;
        let bytes =
            courier_componentize::component_from_module(&resolve, world, &std::fs::read(&module)?)
                .with_context(|| format!("cannot make plugins/c/{name} a component"))?;
        std::fs::remove_file(&module)?;
        // Written under a temporary name, so that a build cut short never leaves a component
        // that looks up to date.
        let partial = component.with_extension("wasm.partial");
        std::fs::write(&partial, bytes)?;
        std::fs::rename(&partial, &component)?;
        eprintln!("built target/polyglot/c/{name}.wasm");
    }
    Ok(())
}

/// The `.c` files directly in `dir`, sorted.
fn sources(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "c"))
        .collect();
    files.sort();
    Ok(files)
}

/// Fails with what to install when the C compiler is missing.
fn ensure_clang() -> Result<()> {
    match Command::new(clang()).arg("--version").output() {
        Ok(output) if output.status.success() => Ok(()),
        _ => bail!(
            "the C plugins need {} with wasi-libc (Debian: apt-get install clang-16 lld-16 \
             wasi-libc libclang-rt-16-dev-wasm32; COURIER_CLANG names another clang)",
            clang()
        ),
    }
}

/// Compiles and links a plugin's sources with the SDK into a WASI preview 1 reactor module.
fn compile(root: &Path, plugin: &Path, module: &Path) -> Result<()> {
    let sdk = root.join("guest-sdk/c");
    let mut command = Command::new(clang());
    command
        .args([
            "--target=wasm32-wasi",
            "-mexec-model=reactor",
            "-std=c11",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
            // The generated bindings leave some parameters unused.
            "-Wno-unused-parameter",
            "-s",
        ])
        .arg("-I")
        .arg(sdk.join("include"))
        .arg("-I")
        .arg(sdk.join("bindings"))
        .args(sources(&sdk.join("src"))?)
        .args(sources(&sdk.join("bindings"))?)
        .args(sources(plugin)?)
        .arg("-o")
        .arg(module);
    polyglot::run(&mut command).with_context(|| {
        format!(
            "the C plugin {} does not compile (the compiler's errors are above)",
            plugin.display()
        )
    })
}

/// The C SDK's own unit tests: its value tree and codecs, built for this machine with its C
/// compiler and run.
pub fn unit_tests(root: &Path) -> Result<()> {
    let sdk = root.join("guest-sdk/c");
    let binary = root.join("target/polyglot/c-sdk-tests");
    std::fs::create_dir_all(root.join("target/polyglot"))?;
    eprintln!("unit tests of the C SDK ...");
    polyglot::run(
        Command::new("cc")
            .args(["-std=c11", "-O1", "-g", "-Wall", "-Wextra", "-Werror"])
            .args(["-fsanitize=address,undefined", "-fno-sanitize-recover=all"])
            .arg("-I")
            .arg(sdk.join("include"))
            .arg("-I")
            .arg(sdk.join("src"))
            .arg(sdk.join("src/value.c"))
            .arg(sdk.join("tests/test_value.c"))
            .arg("-lm")
            .arg("-o")
            .arg(&binary),
    )?;
    polyglot::run(&mut Command::new(&binary))
}
