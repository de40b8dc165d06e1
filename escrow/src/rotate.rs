//! Officer key rotation: re-encrypt every escrowed password to a new officer key (offline),
//! then store the new escrows and retire the old key (server).

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use openpgp::Cert;
use sealpost_keystore::protection::{encrypt_to_officers, verify_escrow, ProtectionConfig};
use sealpost_keystore::{Actor, Address, Keystore};
use sequoia_openpgp as openpgp;
use serde::{Deserialize, Serialize};

use crate::bundle::Bundle;
use crate::officer::OfficerSecret;
use crate::recover::{escrowed_password, unlock_stored};
use crate::secret_io;

/// The format tag of rotation files.
pub const ROTATION_FORMAT: &str = "sealpost-escrow-rotation/1";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Rotation {
    pub format: String,
    pub old_officer: String,
    pub new_officer: String,
    pub created: i64,
    pub entries: Vec<RotatedEscrow>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RotatedEscrow {
    pub account: String,
    pub fingerprint: String,
    /// The password encrypted to the new officer key (armored).
    pub escrow: String,
}

/// What `rotate` did: keys re-escrowed, and keys left out with the reason.
#[derive(Debug, Serialize)]
pub struct RotateReport {
    pub out: String,
    pub new_officer: String,
    pub rotated: usize,
    /// Keys in the bundle without an escrow (recovery model 3): nothing to move.
    pub without_escrow: usize,
    /// Escrows that failed as in the drill (account, fingerprint, reason): left out.
    pub skipped: Vec<(String, String, String)>,
}

/// Offline: re-encrypts every escrow of the bundle that the old officer key opens, and whose
/// password really unlocks its key, to `new_officer`; writes the rotation file (0600).
pub fn rotate(
    old: &OfficerSecret,
    bundle: &Bundle,
    new_officer: &Cert,
    out: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<RotateReport> {
    if new_officer.fingerprint() == old.cert.fingerprint() {
        bail!("the new officer key is the old one");
    }
    if out.exists() {
        bail!("{} already exists; refusing to overwrite it", out.display());
    }
    let mut entries = Vec::new();
    let mut skipped = Vec::new();
    let mut without_escrow = 0;
    let total = bundle.entries.len() as u64;
    for (i, e) in bundle.entries.iter().enumerate() {
        progress(i as u64 + 1, total);
        let pw = match escrowed_password(old, e) {
            Ok(pw) => pw,
            Err(crate::recover::RecoverError::NoEscrow) => {
                without_escrow += 1;
                continue;
            }
            Err(err) => {
                skipped.push((e.account.clone(), e.fingerprint.clone(), err.to_string()));
                continue;
            }
        };
        if let Err(err) = unlock_stored(&e.private_key, &pw) {
            skipped.push((e.account.clone(), e.fingerprint.clone(), err.to_string()));
            continue;
        }
        let escrow = pw
            .map(|p| encrypt_to_officers(p, std::slice::from_ref(new_officer)))
            .map_err(|err| anyhow!("cannot encrypt to the new officer key: {err}"))?;
        entries.push(RotatedEscrow {
            account: e.account.clone(),
            fingerprint: e.fingerprint.clone(),
            escrow,
        });
    }
    let rotation = Rotation {
        format: ROTATION_FORMAT.into(),
        old_officer: old.fingerprint(),
        new_officer: new_officer.fingerprint().to_hex(),
        created: sealpost_keystore::now_unix(),
        entries,
    };
    let mut data = serde_json::to_vec_pretty(&rotation)?;
    data.push(b'\n');
    secret_io::write_secret_file(out, &data)?;
    Ok(RotateReport {
        out: out.display().to_string(),
        new_officer: rotation.new_officer,
        rotated: rotation.entries.len(),
        without_escrow,
        skipped,
    })
}

/// What `import-rotation` did.
#[derive(Debug, Serialize)]
pub struct ImportReport {
    pub new_officer: String,
    pub imported: usize,
    /// Keys whose escrow changed since the export (left as they are), with the reason.
    pub skipped: Vec<(String, String, String)>,
    /// True when the old officer key was retired (no escrow to it is left).
    pub old_retired: bool,
}

/// Server: stores the re-encrypted escrows (each verified against the new officer key,
/// which must be installed and active), then retires the old officer key when no escrow to
/// it is left. Each replaced escrow is audited, and the rotation as a whole.
pub async fn import(ks: &Keystore, path: &Path, actor: &Actor) -> Result<ImportReport> {
    let bytes = secret_io::read_limited(path, 1 << 30, "rotation file")?;
    let r: Rotation = serde_json::from_slice(&bytes)
        .map_err(|e| anyhow!("{} is not a sealpost rotation file ({e})", path.display()))?;
    if r.format != ROTATION_FORMAT {
        bail!(
            "{} has the unknown format {:?} (expected {ROTATION_FORMAT})",
            path.display(),
            r.format
        );
    }
    let new = ks
        .officer_key(&r.new_officer)
        .await?
        .filter(|k| k.active)
        .ok_or_else(|| {
            anyhow!(
                "the new officer key {} is not installed and active; run `sealpost escrow \
                 officer-add` with its public key first",
                r.new_officer
            )
        })?;
    let new_cert = {
        use openpgp::parse::Parse;
        Cert::from_bytes(new.armored.as_bytes())
            .map_err(|_| anyhow!("the stored officer key {} is unreadable", r.new_officer))?
    };
    let config = ProtectionConfig::default();
    let mut imported = 0;
    let mut skipped = Vec::new();
    for e in &r.entries {
        let skip = |why: &str| (e.account.clone(), e.fingerprint.clone(), why.to_string());
        let Ok(addr) = Address::parse(&e.account) else {
            skipped.push(skip("not an address"));
            continue;
        };
        let Some(id) = ks.resolve_recipient(&addr).await? else {
            skipped.push(skip("the account no longer exists"));
            continue;
        };
        match ks.escrow(&id, &e.fingerprint).await? {
            Some(cur) if cur.officer_fingerprint == r.old_officer => {}
            Some(_) => {
                skipped.push(skip("the escrow changed since the export"));
                continue;
            }
            None => {
                skipped.push(skip("the escrow was removed since the export"));
                continue;
            }
        }
        let verified = verify_escrow(
            e.escrow.as_bytes(),
            std::slice::from_ref(&new_cert),
            &config,
        )
        .map_err(|err| anyhow!("{} ({}): {err}", e.account, e.fingerprint))?;
        ks.put_escrow(&id, &e.fingerprint, &verified, actor).await?;
        imported += 1;
    }
    let mut left = 0;
    for acc in ks.list_accounts().await? {
        left += ks
            .escrows_of(&acc.id)
            .await?
            .iter()
            .filter(|x| x.officer_fingerprint == r.old_officer)
            .count();
    }
    let old_retired = match ks.officer_key(&r.old_officer).await? {
        Some(k) if k.active && left == 0 => {
            ks.set_officer_key_active(&r.old_officer, false, actor)
                .await?;
            true
        }
        Some(k) => !k.active,
        None => false,
    };
    ks.audit(
        actor,
        None,
        "escrow.rotate",
        Some(&r.new_officer),
        Some(&format!(
            "{imported} escrow(s) moved from officer {} ({} skipped)",
            r.old_officer,
            skipped.len()
        )),
    )
    .await?;
    Ok(ImportReport {
        new_officer: r.new_officer,
        imported,
        skipped,
        old_retired,
    })
}
