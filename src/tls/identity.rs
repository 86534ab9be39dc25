//! A node's (or an operator's) key and self-signed certificate, made once and kept on disk.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use super::Fingerprint;

pub const CERT_FILE: &str = "cert.pem";
pub const KEY_FILE: &str = "key.pem";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Bad { path: PathBuf, message: String },
    #[error("cannot make a key and certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// A certificate and its private key.
#[derive(Clone)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: CertificateDer<'static>,
    pub fingerprint: Fingerprint,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        write!(f, "Identity({})", self.fingerprint)
    }
}

impl Identity {
    /// Loads the identity kept in `dir`, or makes one (for `name`) if there is none yet.
    pub fn load_or_create(dir: &Path, name: &str) -> Result<Identity, IdentityError> {
        if dir.join(CERT_FILE).exists() || dir.join(KEY_FILE).exists() {
            return Identity::load(dir);
        }
        let identity = Identity::generate(name)?;
        identity.save(dir)?;
        Ok(identity)
    }

    /// A new ECDSA P-256 key and a self-signed certificate valid for 100 years: trust comes
    /// from the replicated fingerprint list, not from the certificate's dates or names.
    pub fn generate(name: &str) -> Result<Identity, IdentityError> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(vec![format!("{name}.fepha")])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("fepha {name}"));
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2120, 1, 1);
        let cert = params.self_signed(&key)?;
        let cert_der = CertificateDer::from(cert.der().to_vec());
        Ok(Identity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            fingerprint: Fingerprint::of_der(&cert_der),
            cert_der,
        })
    }

    pub fn load(dir: &Path) -> Result<Identity, IdentityError> {
        let read = |file: &str| {
            let path = dir.join(file);
            std::fs::read_to_string(&path).map_err(|source| IdentityError::Io { path, source })
        };
        let cert_pem = read(CERT_FILE)?;
        let key_pem = read(KEY_FILE)?;
        let bad = |file: &str, message: String| IdentityError::Bad {
            path: dir.join(file),
            message,
        };
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| bad(CERT_FILE, format!("not a PEM certificate: {e}")))?;
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| bad(KEY_FILE, format!("not a PEM private key: {e}")))?;
        Ok(Identity {
            fingerprint: Fingerprint::of_der(&cert_der),
            cert_pem,
            key_pem,
            cert_der,
        })
    }

    /// Writes the key readable by its owner only (0600), and the certificate.
    pub fn save(&self, dir: &Path) -> Result<(), IdentityError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| IdentityError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        for (file, text, mode) in [
            (KEY_FILE, &self.key_pem, 0o600),
            (CERT_FILE, &self.cert_pem, 0o644),
        ] {
            let path = dir.join(file);
            let tmp = dir.join(format!("{file}.tmp"));
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode)
                .open(&tmp)
                .map_err(io(&tmp))?;
            f.write_all(text.as_bytes()).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
            std::fs::rename(&tmp, &path).map_err(io(&path))?;
        }
        Ok(())
    }

    pub fn key_der(&self) -> Result<PrivateKeyDer<'static>, rustls::Error> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| rustls::Error::General(format!("private key: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn made_once_then_loaded_with_a_private_key_file() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let made = Identity::load_or_create(dir.path(), "fep1")?;
        let loaded = Identity::load_or_create(dir.path(), "fep1")?;
        assert_eq!(made.fingerprint, loaded.fingerprint);
        assert_eq!(made.fingerprint, Fingerprint::of_der(&loaded.cert_der));
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))?
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_ne!(Identity::generate("fep1")?.fingerprint, made.fingerprint);
        Ok(())
    }

    #[test]
    fn a_broken_file_is_a_clear_error() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        Identity::load_or_create(dir.path(), "fep1")?;
        std::fs::write(dir.path().join(CERT_FILE), "not a certificate")?;
        let err = Identity::load(dir.path())
            .expect_err("must fail")
            .to_string();
        assert!(err.contains(CERT_FILE), "{err}");
        Ok(())
    }
}
