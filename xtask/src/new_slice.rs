//! `cargo xtask new-slice NAME [--dir DIR]`: a ready slice crate at `DIR/NAME` (default: the current
//! folder), outside any workspace: `Cargo.toml` (a `cdylib` + `rlib` depending on this checkout's
//! `aether-sdk` by absolute path), `src/lib.rs` (one method behind `GET /NAME/{name}`, reading a `greeting`
//! from its config) and a unit test that calls the slice directly, so `cargo test` passes at once and
//! `cargo build --release` gives the library to upload.
//!
//! Invariants: NAME is a crate and artifact name (lowercase ASCII letters, digits and `-`, starting with a
//! letter, at most 64 bytes); an existing folder is never overwritten.

use std::path::{Path, PathBuf};

const NAME_BYTES_MAX: usize = 64;

pub fn new_slice(args: &[String]) -> Result<(), String> {
    let usage = "usage: cargo xtask new-slice NAME [--dir DIR]";
    let (name, dir) = match args {
        [name] => (name, PathBuf::from(".")),
        [name, flag, dir] if flag == "--dir" => (name, PathBuf::from(dir)),
        _ => return Err(usage.into()),
    };
    check_name(name)?;
    let sdk = crate::util::root().join("aether-sdk");
    let crate_dir = dir.join(name);
    if crate_dir.exists() {
        return Err(format!("{} exists already; choose another NAME or --dir", crate_dir.display()));
    }
    std::fs::create_dir_all(crate_dir.join("src"))
        .map_err(|e| format!("cannot create {}: {e}", crate_dir.display()))?;
    write(&crate_dir.join("Cargo.toml"), &manifest(name, &sdk))?;
    write(&crate_dir.join("src").join("lib.rs"), &lib_rs(name))?;
    write(&crate_dir.join(".gitignore"), "/target\n")?;
    println!("created the slice crate {} (artifact com.example:{name}:1.0.0)", crate_dir.display());
    println!("  cd {} && cargo test && cargo build --release", crate_dir.display());
    println!("  the library to upload: target/release/lib{}.so", name.replace('-', "_"));
    Ok(())
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = name.len() <= NAME_BYTES_MAX
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a slice name: lowercase letters, digits and `-`, starting with a letter, at most \
             {NAME_BYTES_MAX} bytes"
        ))
    }
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn manifest(name: &str, sdk: &Path) -> String {
    let sdk = sdk.display().to_string().replace('\\', "/");
    format!(
        "[package]\nname = \"{name}\"\nversion = \"1.0.0\"\nedition = \"2021\"\n\n[lib]\n# cdylib: the library the node \
         loads; rlib: lets the tests call the slice directly.\ncrate-type = [\"cdylib\", \"rlib\"]\n\n[dependencies]\n\
         aether-sdk = {{ path = \"{sdk}\" }}\n"
    )
}

fn lib_rs(name: &str) -> String {
    let type_name: String = name
        .split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect();
    TEMPLATE.replace("{{type}}", &type_name).replace("{{name}}", name)
}

const TEMPLATE: &str = r##"//! The `{{name}}` slice: `GET /{{name}}/{name}` answers `{"<greeting>": name}`.

use aether_sdk::{json, Config, Context, Method, Request, Response, Route, Slice, Status};

pub struct {{type}} {
    ctx: Context,
}

impl Slice for {{type}} {
    const NAME: &'static str = "{{name}}";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const METHODS: &'static [Method] = &[Method::new("hello")];
    const ROUTES: &'static [Route] = &[Route::get("/{{name}}/{name}", "hello")];

    fn start(ctx: Context, _config: &Config) -> Result<{{type}}, aether_sdk::Error> {
        Ok({{type}} { ctx })
    }

    fn call(&self, _method: &str, request: &Request<'_>) -> Response {
        let Some(name) = request.param("name") else {
            return Response::error(Status::BAD_REQUEST, "path parameter `name` is missing");
        };
        // Read live: a changed `[slices.config]` reaches the running slice.
        let greeting = self.ctx.config("greeting").unwrap_or_else(|| "hello".to_owned());
        Response::json(json::Object::new().str(&greeting, name).finish())
    }
}

aether_sdk::export_slice!({{type}});

#[cfg(test)]
mod tests {
    use super::*;
    use aether_sdk::RequestBuilder;

    #[test]
    fn hello_answers_the_name() {
        let slice = {{type}}::start(Context::detached("test-node"), &Config::default()).unwrap();
        let bytes = RequestBuilder::new().param("name", "world").encode().unwrap();
        let answer = slice.call("hello", &Request::parse(&bytes).unwrap());
        assert_eq!(answer.status, Status::OK);
        assert_eq!(answer.body_text(), r#"{"hello":"world"}"#);
    }
}
"##;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_turned_into_a_type_name() {
        for good in ["greeter", "url-shortener2"] {
            assert_eq!(check_name(good), Ok(()));
        }
        for bad in ["", "Greeter", "2fa", "a_b", "a-", "../x", &"a".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(lib_rs("url-shortener").contains("pub struct UrlShortener {"));
        assert!(lib_rs("url-shortener").contains(r#"Route::get("/url-shortener/{name}", "hello")"#));
    }
}
