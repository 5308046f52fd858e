//! Paths of the repository in Maven's layout, below `/repository/`: a version's files
//! `{group as folders}/{artifact}/{version}/{artifact}-{version}.so[.sha1|.md5|.sha256]` and an artifact's
//! `{group as folders}/{artifact}/maven-metadata.xml[.sha1|.md5]`.
//!
//! Every path comes from a client: it is parsed once, here, into coordinates (`kvstore::Artifact`, which
//! checks each part) and a file kind, or refused with a 400 (a malformed path) or 404 (a well-formed path
//! this repository never holds). Invariants: a path is at most [`PATH_BYTES_MAX`] bytes and
//! [`SEGMENTS_MAX`] segments; no segment is empty, `.` or `..`, or holds a byte outside
//! `[A-Za-z0-9._+-]` (the server has percent-decoded it, so `%2e%2e` and `%2f` arrive as `..` and `/`).

use crate::error::ApiError;
use kvstore::Artifact;

/// Longest repository path accepted, in bytes.
pub const PATH_BYTES_MAX: usize = 1024;
/// Most segments: group folders, artifact, version, file.
pub const SEGMENTS_MAX: usize = 32;
/// The library's extension in the repository.
pub const LIBRARY_EXTENSION: &str = "so";
const METADATA: &str = "maven-metadata.xml";

/// A checksum sidecar's algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    Sha1,
    Md5,
    Sha256,
}

impl Checksum {
    const ALL: [Checksum; 3] = [Checksum::Sha1, Checksum::Md5, Checksum::Sha256];

    pub fn extension(self) -> &'static str {
        match self {
            Checksum::Sha1 => "sha1",
            Checksum::Md5 => "md5",
            Checksum::Sha256 => "sha256",
        }
    }

    /// Lower-case hex of `bytes`' digest.
    pub fn hex(self, bytes: &[u8]) -> String {
        use sha1::Digest as _;
        match self {
            Checksum::Sha1 => hex(&sha1::Sha1::digest(bytes)),
            Checksum::Md5 => hex(&md5::Md5::digest(bytes)),
            Checksum::Sha256 => hex(&sha2::Sha256::digest(bytes)),
        }
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a repository path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoPath {
    /// The library of a version (`checksum: None`) or one of its checksum sidecars.
    Library { artifact: Artifact, checksum: Option<Checksum> },
    /// The artifact's version list (`maven-metadata.xml`), or one of its sidecars (SHA-1 and MD5 only).
    Metadata { group: String, id: String, checksum: Option<Checksum> },
}

/// Parses the part of a request path after `repository/`.
pub fn parse(path: &str) -> Result<RepoPath, ApiError> {
    if path.len() > PATH_BYTES_MAX {
        return Err(ApiError::bad_request(format!("a repository path has at most {PATH_BYTES_MAX} bytes")));
    }
    let segments: Vec<&str> = path.split('/').collect();
    if segments.len() > SEGMENTS_MAX {
        return Err(ApiError::bad_request(format!("a repository path has at most {SEGMENTS_MAX} segments")));
    }
    for segment in &segments {
        check_segment(segment)?;
    }
    let Some((file, folders)) = segments.split_last() else { return Err(shape()) };
    if let Some(rest) = file.strip_prefix(METADATA) {
        let checksum = match rest {
            "" => None,
            ".sha1" => Some(Checksum::Sha1),
            ".md5" => Some(Checksum::Md5),
            _ => return Err(ApiError::not_found(format!("this repository has no {file}"))),
        };
        let Some((id, group)) = folders.split_last().filter(|(_, group)| !group.is_empty()) else {
            return Err(shape());
        };
        let group = group.join(".");
        let base = kvstore::ArtifactBase::parse(&format!("{group}:{id}")).map_err(|e| bad_coords(&e))?;
        return Ok(RepoPath::Metadata { group: base.group().to_owned(), id: base.artifact().to_owned(), checksum });
    }
    let [group @ .., id, version] = folders else { return Err(shape()) };
    if group.is_empty() {
        return Err(shape());
    }
    let artifact = Artifact::parse(&format!("{}:{id}:{version}", group.join("."))).map_err(|e| bad_coords(&e))?;
    let checksum = file_kind(&artifact, file)?;
    Ok(RepoPath::Library { artifact, checksum })
}

/// The library's file name in the repository.
pub fn library_file(artifact: &Artifact) -> String {
    format!("{}-{}.{LIBRARY_EXTENSION}", artifact.id(), artifact.version())
}

/// `{artifact}-{version}.so` and its sidecars; another extension after `{artifact}-{version}.` is not a
/// file this repository keeps (404), and a name that is not the version's at all is a 400 naming the right one.
fn file_kind(artifact: &Artifact, file: &str) -> Result<Option<Checksum>, ApiError> {
    let stem = format!("{}-{}.", artifact.id(), artifact.version());
    let Some(extension) = file.strip_prefix(&stem) else {
        return Err(ApiError::bad_request(format!(
            "'{file}' is not a file of {artifact}: its library is {}",
            library_file(artifact)
        )));
    };
    if extension == LIBRARY_EXTENSION {
        return Ok(None);
    }
    let sidecar = extension.strip_prefix(LIBRARY_EXTENSION).and_then(|s| s.strip_prefix('.'));
    match Checksum::ALL.into_iter().find(|c| Some(c.extension()) == sidecar) {
        Some(checksum) => Ok(Some(checksum)),
        None => Err(ApiError::not_found(format!(
            "this repository keeps {} and its .sha1, .md5 and .sha256 files, not '{file}'",
            library_file(artifact)
        ))),
    }
}

fn check_segment(segment: &str) -> Result<(), ApiError> {
    if segment.is_empty() || segment == "." || segment == ".." {
        return Err(ApiError::bad_request("a repository path has no empty, '.' or '..' segments"));
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-');
    if let Some(bad) = segment.bytes().find(|b| !allowed(*b)) {
        return Err(ApiError::bad_request(format!(
            "a repository path holds letters, digits and . _ + - only, not byte 0x{bad:02x}"
        )));
    }
    Ok(())
}

fn shape() -> ApiError {
    ApiError::bad_request(
        "a repository path is {group as folders}/{artifact}/{version}/{artifact}-{version}.so[.sha1|.md5|.sha256] \
         or {group as folders}/{artifact}/maven-metadata.xml[.sha1|.md5]",
    )
}

fn bad_coords(e: &impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("the path does not spell coordinates: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lib(coords: &str, checksum: Option<Checksum>) -> RepoPath {
        RepoPath::Library { artifact: Artifact::parse(coords).unwrap(), checksum }
    }

    #[test]
    fn library_and_sidecars_parse_to_coordinates() {
        let base = "org/example/echo/1.0.0/echo-1.0.0.so";
        assert_eq!(parse(base).unwrap(), lib("org.example:echo:1.0.0", None));
        assert_eq!(parse(&format!("{base}.sha1")).unwrap(), lib("org.example:echo:1.0.0", Some(Checksum::Sha1)));
        assert_eq!(parse(&format!("{base}.md5")).unwrap(), lib("org.example:echo:1.0.0", Some(Checksum::Md5)));
        assert_eq!(parse(&format!("{base}.sha256")).unwrap(), lib("org.example:echo:1.0.0", Some(Checksum::Sha256)));
        let snapshot = "io/acme/tools/shop/2.1.0-SNAPSHOT/shop-2.1.0-SNAPSHOT.so";
        assert_eq!(parse(snapshot).unwrap(), lib("io.acme.tools:shop:2.1.0-SNAPSHOT", None));
    }

    #[test]
    fn metadata_and_its_sidecars_parse() {
        let meta = |checksum| RepoPath::Metadata { group: "org.example".into(), id: "echo".into(), checksum };
        assert_eq!(parse("org/example/echo/maven-metadata.xml").unwrap(), meta(None));
        assert_eq!(parse("org/example/echo/maven-metadata.xml.sha1").unwrap(), meta(Some(Checksum::Sha1)));
        assert_eq!(parse("org/example/echo/maven-metadata.xml.md5").unwrap(), meta(Some(Checksum::Md5)));
        assert_eq!(parse("org/example/echo/maven-metadata.xml.sha256").unwrap_err().status, 404);
        assert_eq!(parse("echo/maven-metadata.xml").unwrap_err().status, 400, "no group");
    }

    #[test]
    fn hostile_paths_are_refused() {
        let refused = |path: &str, status: u16| {
            let e = parse(path).expect_err(path);
            assert_eq!(e.status, status, "{path}: {}", e.detail);
        };
        refused("org/example/../echo/1.0.0/echo-1.0.0.so", 400);
        refused("org/example/./echo/1.0.0/echo-1.0.0.so", 400);
        refused("org//example/echo/1.0.0/echo-1.0.0.so", 400);
        refused("org/example/echo/1.0.0/", 400);
        refused("", 400);
        refused("/org/example/echo/1.0.0/echo-1.0.0.so", 400);
        refused("org/ex%2e/echo/1.0.0/echo-1.0.0.so", 400);
        refused("org/exa mple/echo/1.0.0/echo-1.0.0.so", 400);
        refused("org/example/echo/1.0.0/echo-1.0.0.so\0", 400);
        refused(&format!("{}/echo/1.0.0/echo-1.0.0.so", "a/".repeat(600)), 400);
        refused(&format!("{}/echo/1.0.0/echo-1.0.0.so", ["g"; 40].join("/")), 400);
        refused("echo/1.0.0/echo-1.0.0.so", 400);
        refused("org/example/echo/one/echo-one.so", 400);
        refused("org/example/echo/1.0.0/other-1.0.0.so", 400);
        refused("org/example/echo/1.0.0/echo-1.0.1.so", 400);
        refused("org/example/echo/1.0.0/echo-1.0.0.jar", 404);
        refused("org/example/echo/1.0.0/echo-1.0.0.so.sig.sha1", 404);
        refused("org/example/echo/1.0.0/echo-1.0.0.pom", 404);
    }

    #[test]
    fn checksums_are_the_usual_hex_digests() {
        assert_eq!(Checksum::Sha1.hex(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(Checksum::Md5.hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(Checksum::Sha256.hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
