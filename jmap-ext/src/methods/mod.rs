//! Method implementations: the generic /get, /set and /changes machinery (RFC 8620 §5)
//! and one module per data type.

mod escrow;
mod keypair;
mod private_key;
mod public_key;
mod settings;

use std::collections::HashMap;

use sealpost_keystore::{Keystore, ObjectType};
use serde_json::{json, Map, Value};

use crate::api::Request;
use crate::auth::Principal;
use crate::error::{internal, set_error, MethodError, SetError};
use crate::JmapState;

/// What one method call can see: the service, the user, the whole request (for the
/// escrow-required look-ahead) and the creation ids so far.
pub struct Ctx<'a> {
    pub state: &'a JmapState,
    pub principal: &'a Principal,
    pub req: &'a Request,
    /// Index of the call being processed in `req.calls`.
    pub index: usize,
    pub created_ids: HashMap<String, String>,
    /// Escrows stored together with their private key (escrow = "required"): private key
    /// fingerprint → the Escrow creation id that carried the blob.
    pub prestored_escrows: HashMap<String, String>,
}

impl<'a> Ctx<'a> {
    pub fn new(state: &'a JmapState, principal: &'a Principal, req: &'a Request) -> Ctx<'a> {
        Ctx {
            state,
            principal,
            req,
            index: 0,
            created_ids: HashMap::new(),
            prestored_escrows: HashMap::new(),
        }
    }

    pub fn ks(&self) -> &Keystore {
        &self.state.inner().ks
    }

    pub fn account(&self) -> &str {
        &self.principal.account_id
    }

    /// Resolves `#creationId` to the id created earlier in this request.
    pub fn resolve_id(&self, id: &str) -> Option<String> {
        match id.strip_prefix('#') {
            Some(cid) => self.created_ids.get(cid).cloned(),
            None => Some(id.to_string()),
        }
    }
}

/// The data types with /get, /set and /changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// TMail's view of public keys: `{id, key}`.
    Keystore,
    PublicKey,
    PrivateKey,
    Escrow,
    KeySettings,
}

impl Kind {
    pub fn object_type(self) -> ObjectType {
        match self {
            Kind::Keystore | Kind::PublicKey => ObjectType::PublicKey,
            Kind::PrivateKey => ObjectType::PrivateKey,
            Kind::Escrow => ObjectType::Escrow,
            Kind::KeySettings => ObjectType::KeySettings,
        }
    }

    /// Every property, and whether /get returns it when `properties` is null.
    fn properties(self) -> &'static [(&'static str, bool)] {
        match self {
            Kind::Keystore => &[("id", true), ("key", true)],
            Kind::PublicKey => &[
                ("id", true),
                ("kind", true),
                ("armored", true),
                ("blobId", true),
                ("fingerprint", true),
                ("userIds", true),
                ("algorithm", true),
                ("version", true),
                ("created", true),
                ("expires", true),
                ("isActive", true),
            ],
            Kind::PrivateKey => &[
                ("id", true),
                ("publicKeyId", true),
                ("label", true),
                ("created", true),
                ("updated", true),
                ("protection", true),
                ("size", true),
                ("blobId", true),
                ("armored", false),
            ],
            Kind::Escrow => &[
                ("id", true),
                ("privateKeyId", true),
                ("officerFingerprint", true),
                ("created", true),
                ("size", true),
                ("blobId", true),
                ("armored", false),
            ],
            Kind::KeySettings => &[
                ("id", true),
                ("encryptIncoming", true),
                ("protectSubject", true),
                ("publishWkd", true),
                ("format", true),
            ],
        }
    }
}

pub async fn dispatch(
    ctx: &mut Ctx<'_>,
    name: &str,
    args: Map<String, Value>,
) -> Result<Value, MethodError> {
    let (ty, method) = name.split_once('/').unwrap_or((name, ""));
    let kind = match ty {
        "Core" if method == "echo" => return Ok(Value::Object(args)),
        "KeyPair" if method == "generate" => return keypair::generate(ctx, args).await,
        "Keystore" => Kind::Keystore,
        "PublicKey" => Kind::PublicKey,
        "PrivateKey" => Kind::PrivateKey,
        "Escrow" => Kind::Escrow,
        "KeySettings" => Kind::KeySettings,
        _ => return Err(unknown_method(name)),
    };
    match (method, kind) {
        ("get", _) => get(ctx, kind, args).await,
        ("set", _) => set(ctx, kind, args).await,
        ("changes", Kind::PublicKey | Kind::PrivateKey | Kind::Escrow) => {
            changes(ctx, kind, args).await
        }
        _ => Err(unknown_method(name)),
    }
}

fn unknown_method(name: &str) -> MethodError {
    MethodError::new(
        "unknownMethod",
        format!(
            "unknown method {:?}",
            name.chars().take(64).collect::<String>()
        ),
    )
}

// ---- arguments ------------------------------------------------------------------------

/// Method arguments, consumed one by one; leftovers are reported as unknown.
pub struct Args(Map<String, Value>);

impl Args {
    pub fn new(m: Map<String, Value>) -> Args {
        Args(m)
    }

    pub fn take(&mut self, k: &str) -> Option<Value> {
        self.0.remove(k).filter(|v| !v.is_null())
    }

    /// Checks `accountId` against the user's own account.
    pub fn account(&mut self, ctx: &Ctx) -> Result<(), MethodError> {
        match self.0.remove("accountId") {
            Some(Value::String(s)) if s == ctx.account() => Ok(()),
            Some(Value::String(_)) => Err(MethodError::account_not_found()),
            Some(_) => Err(MethodError::invalid_arguments("accountId must be a string")),
            None => Err(MethodError::invalid_arguments("accountId is required")),
        }
    }

    pub fn opt_string(&mut self, k: &str) -> Result<Option<String>, MethodError> {
        match self.take(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(MethodError::invalid_arguments(format!(
                "{k} must be a string"
            ))),
        }
    }

    pub fn opt_strings(&mut self, k: &str) -> Result<Option<Vec<String>>, MethodError> {
        match self.take(k) {
            None => Ok(None),
            Some(Value::Array(a)) => a
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(MethodError::invalid_arguments(format!(
                        "{k} must be an array of strings"
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(MethodError::invalid_arguments(format!(
                "{k} must be an array of strings"
            ))),
        }
    }

    pub fn opt_object(&mut self, k: &str) -> Result<Option<Map<String, Value>>, MethodError> {
        match self.take(k) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(_) => Err(MethodError::invalid_arguments(format!(
                "{k} must be an object"
            ))),
        }
    }

    pub fn finish(self) -> Result<(), MethodError> {
        match self.0.keys().next() {
            None => Ok(()),
            Some(k) => Err(MethodError::invalid_arguments(format!(
                "unknown argument {:?}",
                k.chars().take(64).collect::<String>()
            ))),
        }
    }
}

// ---- /get -----------------------------------------------------------------------------

pub async fn state_of(ctx: &Ctx<'_>, kind: Kind) -> Result<String, MethodError> {
    ctx.ks()
        .state(ctx.account(), kind.object_type())
        .await
        .map(|s| s.to_string())
        .map_err(|e| internal("state", &e))
}

/// The state and every object of the account; public keys may come from the cache. The
/// state is read first, so it never claims a change the objects lack.
async fn snapshot(
    ctx: &Ctx<'_>,
    kind: Kind,
    with_blob: bool,
) -> Result<std::sync::Arc<crate::cache::Snapshot>, MethodError> {
    let cache = &ctx.state.inner().cache;
    if matches!(kind, Kind::PublicKey | Kind::Keystore) {
        if let Some(s) = cache.public_keys(ctx.account()) {
            if kind == Kind::PublicKey {
                return Ok(s);
            }
            // The TMail view is derived from the full objects.
            return Ok(std::sync::Arc::new(crate::cache::Snapshot {
                state: s.state.clone(),
                objects: s
                    .objects
                    .iter()
                    .map(|(id, v)| (id.clone(), json!({"id": id, "key": v["armored"]})))
                    .collect(),
            }));
        }
    }
    if matches!(kind, Kind::PublicKey | Kind::Keystore) {
        let generation = cache.generation();
        let (state, keys) = ctx
            .ks()
            .public_keys_with_state(ctx.account())
            .await
            .map_err(|e| internal("public keys", &e))?;
        let full = std::sync::Arc::new(crate::cache::Snapshot {
            state: state.to_string(),
            objects: public_key::views(Kind::PublicKey, &keys),
        });
        cache.put_public_keys(ctx.account(), generation, full.clone());
        if kind == Kind::PublicKey {
            return Ok(full);
        }
        return Ok(std::sync::Arc::new(crate::cache::Snapshot {
            state: full.state.clone(),
            objects: public_key::views(Kind::Keystore, &keys),
        }));
    }
    let state = state_of(ctx, kind).await?;
    let s = std::sync::Arc::new(crate::cache::Snapshot {
        state,
        objects: load_all(ctx, kind, with_blob).await?,
    });
    Ok(s)
}

/// Every object of the account, as full JSON objects (blobs only when `with_blob`).
async fn load_all(
    ctx: &Ctx<'_>,
    kind: Kind,
    with_blob: bool,
) -> Result<Vec<(String, Value)>, MethodError> {
    match kind {
        Kind::Keystore | Kind::PublicKey => {
            let (_, keys) = ctx
                .ks()
                .public_keys_with_state(ctx.account())
                .await
                .map_err(|e| internal("public keys", &e))?;
            Ok(public_key::views(kind, &keys))
        }
        Kind::PrivateKey => private_key::load_all(ctx, with_blob).await,
        Kind::Escrow => escrow::load_all(ctx, with_blob).await,
        Kind::KeySettings => settings::load_all(ctx).await,
    }
}

async fn get(
    ctx: &mut Ctx<'_>,
    kind: Kind,
    args: Map<String, Value>,
) -> Result<Value, MethodError> {
    let mut a = Args::new(args);
    a.account(ctx)?;
    let ids = a.opt_strings("ids")?;
    let properties = a.opt_strings("properties")?;
    a.finish()?;
    let max = ctx.state.config().limits.max_objects_in_get as usize;
    if let Some(ids) = &ids {
        if ids.len() > max {
            return Err(MethodError::new(
                "requestTooLarge",
                format!("{} ids requested; maxObjectsInGet is {max}", ids.len()),
            ));
        }
    }
    let known = kind.properties();
    let wanted: Vec<&str> = match &properties {
        None => known.iter().filter(|(_, d)| *d).map(|(p, _)| *p).collect(),
        Some(ps) => {
            for p in ps {
                if !known.iter().any(|(k, _)| k == p) {
                    return Err(MethodError::invalid_arguments(format!(
                        "unknown property {:?}",
                        p.chars().take(64).collect::<String>()
                    )));
                }
            }
            ps.iter().map(String::as_str).collect()
        }
    };
    let snapshot = snapshot(ctx, kind, wanted.contains(&"armored")).await?;
    let (state, all) = (&snapshot.state, &snapshot.objects);
    let project = |v: &Value| -> Value {
        let mut out = Map::new();
        out.insert("id".into(), v["id"].clone());
        for p in &wanted {
            if let Some(x) = v.get(*p) {
                out.insert(p.to_string(), x.clone());
            }
        }
        Value::Object(out)
    };
    let mut list = Vec::new();
    let mut not_found = Vec::new();
    match ids {
        None => {
            if all.len() > max {
                return Err(MethodError::new(
                    "requestTooLarge",
                    format!(
                        "the account has {} objects; maxObjectsInGet is {max}: ask for ids",
                        all.len()
                    ),
                ));
            }
            list = all.iter().map(|(_, v)| project(v)).collect();
        }
        Some(ids) => {
            let mut seen = std::collections::HashSet::new();
            for raw in ids {
                if !seen.insert(raw.clone()) {
                    continue;
                }
                let id = ctx.resolve_id(&raw).map(|i| normalize_id(kind, &i));
                match id.and_then(|id| all.iter().find(|(i, _)| *i == id)) {
                    Some((_, v)) => list.push(project(v)),
                    None => not_found.push(raw),
                }
            }
        }
    }
    Ok(json!({
        "accountId": ctx.account(),
        "state": state,
        "list": list,
        "notFound": not_found,
    }))
}

/// Fingerprint ids are upper-case hex; clients may send them in lower case.
fn normalize_id(kind: Kind, id: &str) -> String {
    match kind {
        Kind::KeySettings => id.to_string(),
        _ => id.to_ascii_uppercase(),
    }
}

// ---- /set -----------------------------------------------------------------------------

/// Why one object of a /set failed: a SetError for that object, or a failure of the whole
/// method (serverFail).
pub enum Fail {
    Set(SetError),
    Method(MethodError),
}

impl From<SetError> for Fail {
    fn from(e: SetError) -> Fail {
        Fail::Set(e)
    }
}

impl From<MethodError> for Fail {
    fn from(e: MethodError) -> Fail {
        Fail::Method(e)
    }
}

/// Maps a keystore error of one object's write.
pub fn ks_fail(e: sealpost_keystore::Error, props: &[&str]) -> Fail {
    match set_error(e, props) {
        Ok(s) => Fail::Set(s),
        Err(m) => Fail::Method(m),
    }
}

/// Checks that an object for create or update names only `allowed` properties.
pub fn only(obj: &Map<String, Value>, allowed: &[&str], immutable_hint: &str) -> Result<(), Fail> {
    let bad: Vec<&str> = obj
        .keys()
        .map(String::as_str)
        .filter(|k| !allowed.contains(k))
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    Err(Fail::Set(SetError::invalid(
        &bad,
        format!(
            "these properties cannot be set here: {}{immutable_hint}",
            bad.join(", ")
        ),
    )))
}

pub fn get_str<'v>(obj: &'v Map<String, Value>, k: &str) -> Result<Option<&'v str>, Fail> {
    match obj.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Fail::Set(SetError::invalid(
            &[k],
            format!("{k} must be a string"),
        ))),
    }
}

pub fn require_str<'v>(obj: &'v Map<String, Value>, k: &str) -> Result<&'v str, Fail> {
    get_str(obj, k)?.ok_or_else(|| Fail::Set(SetError::invalid(&[k], format!("{k} is required"))))
}

/// The uploaded bytes of an object: `prop` (armored text) or `blobId` (an upload).
pub fn input_bytes(ctx: &Ctx<'_>, obj: &Map<String, Value>, prop: &str) -> Result<Vec<u8>, Fail> {
    match (get_str(obj, prop)?, get_str(obj, "blobId")?) {
        (Some(_), Some(_)) => Err(Fail::Set(SetError::invalid(
            &[prop, "blobId"],
            format!("give either {prop} or blobId, not both"),
        ))),
        (Some(text), None) => Ok(text.as_bytes().to_vec()),
        (None, Some(id)) => ctx
            .state
            .inner()
            .blobs
            .get(ctx.account(), id)
            .map(|b| b.to_vec())
            .ok_or_else(|| {
                Fail::Set(SetError::invalid(
                    &["blobId"],
                    "no such upload in this account (uploads expire after an hour)",
                ))
            }),
        (None, None) => Err(Fail::Set(SetError::invalid(
            &[prop],
            format!("{prop} (or the blobId of an upload) is required"),
        ))),
    }
}

pub fn get_bool(obj: &Map<String, Value>, k: &str) -> Result<Option<bool>, Fail> {
    match obj.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(Fail::Set(SetError::invalid(
            &[k],
            format!("{k} must be true or false"),
        ))),
    }
}

async fn set(
    ctx: &mut Ctx<'_>,
    kind: Kind,
    args: Map<String, Value>,
) -> Result<Value, MethodError> {
    let mut a = Args::new(args);
    a.account(ctx)?;
    let if_in_state = a.opt_string("ifInState")?;
    let create = a.opt_object("create")?.unwrap_or_default();
    let update = a.opt_object("update")?.unwrap_or_default();
    let destroy = a.opt_strings("destroy")?.unwrap_or_default();
    a.finish()?;
    let max = ctx.state.config().limits.max_objects_in_set as usize;
    let total = create.len() + update.len() + destroy.len();
    if total > max {
        return Err(MethodError::new(
            "requestTooLarge",
            format!("{total} objects in one /set; maxObjectsInSet is {max}"),
        ));
    }
    let old_state = state_of(ctx, kind).await?;
    if let Some(s) = if_in_state {
        if s != old_state {
            return Err(MethodError::new(
                "stateMismatch",
                format!("ifInState is {s:?} but the current state is {old_state:?}"),
            ));
        }
    }

    let mut created = Map::new();
    let mut not_created = Map::new();
    for (cid, obj) in create {
        let Value::Object(obj) = obj else {
            not_created.insert(
                cid,
                SetError::new(
                    "invalidProperties",
                    "the object to create must be a JSON object",
                )
                .to_json(),
            );
            continue;
        };
        let r = match kind {
            Kind::Keystore | Kind::PublicKey => public_key::create(ctx, kind, &obj).await,
            Kind::PrivateKey => private_key::create(ctx, &cid, &obj).await,
            Kind::Escrow => escrow::create(ctx, &cid, &obj).await,
            Kind::KeySettings => Err(Fail::Set(SetError::new(
                "forbidden",
                "KeySettings is a singleton: update the object \"singleton\" instead",
            ))),
        };
        match r {
            Ok((id, v)) => {
                ctx.created_ids.insert(cid.clone(), id);
                created.insert(cid, v);
            }
            Err(Fail::Set(e)) => {
                not_created.insert(cid, e.to_json());
            }
            Err(Fail::Method(m)) => return Err(m),
        }
    }

    let mut updated = Map::new();
    let mut not_updated = Map::new();
    for (raw, patch) in update {
        let Value::Object(patch) = patch else {
            not_updated.insert(
                raw,
                SetError::new("invalidPatch", "the patch must be a JSON object").to_json(),
            );
            continue;
        };
        let Some(id) = ctx.resolve_id(&raw).map(|i| normalize_id(kind, &i)) else {
            not_updated.insert(raw, SetError::not_found().to_json());
            continue;
        };
        if let Some(bad) = patch.keys().find(|k| k.contains('/')) {
            not_updated.insert(
                raw,
                SetError::new(
                    "invalidPatch",
                    format!("{bad:?}: these objects have no nested properties to patch"),
                )
                .to_json(),
            );
            continue;
        }
        let r = match kind {
            Kind::Keystore | Kind::PublicKey => public_key::update(ctx, kind, &id, &patch).await,
            Kind::PrivateKey => private_key::update(ctx, &id, &patch).await,
            Kind::Escrow => escrow::update(ctx, &id, &patch).await,
            Kind::KeySettings => settings::update(ctx, &id, &patch).await,
        };
        match r {
            Ok(v) => {
                updated.insert(raw, v);
            }
            Err(Fail::Set(e)) => {
                not_updated.insert(raw, e.to_json());
            }
            Err(Fail::Method(m)) => return Err(m),
        }
    }

    let mut destroyed = Vec::new();
    let mut not_destroyed = Map::new();
    for raw in destroy {
        let Some(id) = ctx.resolve_id(&raw).map(|i| normalize_id(kind, &i)) else {
            not_destroyed.insert(raw, SetError::not_found().to_json());
            continue;
        };
        let r = match kind {
            Kind::Keystore | Kind::PublicKey => public_key::destroy(ctx, &id).await,
            Kind::PrivateKey => private_key::destroy(ctx, &id).await,
            Kind::Escrow => escrow::destroy(ctx, &id).await,
            Kind::KeySettings => Err(Fail::Set(SetError::new(
                "forbidden",
                "KeySettings is a singleton and cannot be destroyed",
            ))),
        };
        match r {
            Ok(()) => destroyed.push(Value::String(raw)),
            Err(Fail::Set(e)) => {
                not_destroyed.insert(raw, e.to_json());
            }
            Err(Fail::Method(m)) => return Err(m),
        }
    }

    ctx.state.inner().cache.invalidate(ctx.account());
    let new_state = state_of(ctx, kind).await?;
    let or_null = |m: Map<String, Value>| {
        if m.is_empty() {
            Value::Null
        } else {
            Value::Object(m)
        }
    };
    Ok(json!({
        "accountId": ctx.account(),
        "oldState": old_state,
        "newState": new_state,
        "created": or_null(created),
        "updated": or_null(updated),
        "destroyed": if destroyed.is_empty() { Value::Null } else { Value::Array(destroyed) },
        "notCreated": or_null(not_created),
        "notUpdated": or_null(not_updated),
        "notDestroyed": or_null(not_destroyed),
    }))
}

// ---- /changes -------------------------------------------------------------------------

async fn changes(
    ctx: &mut Ctx<'_>,
    kind: Kind,
    args: Map<String, Value>,
) -> Result<Value, MethodError> {
    let mut a = Args::new(args);
    a.account(ctx)?;
    let since = a
        .opt_string("sinceState")?
        .ok_or_else(|| MethodError::invalid_arguments("sinceState is required"))?;
    let max_changes = match a.take("maxChanges") {
        None => None,
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 => Some(n),
            _ => {
                return Err(MethodError::invalid_arguments(
                    "maxChanges must be a positive integer",
                ))
            }
        },
    };
    a.finish()?;
    let current: i64 = ctx
        .ks()
        .state(ctx.account(), kind.object_type())
        .await
        .map_err(|e| internal("state", &e))?;
    let cannot = || {
        MethodError::new(
            "cannotCalculateChanges",
            format!("the state {since:?} is not one this server issued; fetch everything again with /get"),
        )
    };
    let since_n: i64 = since.parse().map_err(|_| cannot())?;
    if since_n < 0 || since_n > current || since != since_n.to_string() {
        return Err(cannot());
    }
    let limit = max_changes.unwrap_or(100_000).min(100_000) as i64;
    let rows = ctx
        .ks()
        .changes_since(ctx.account(), kind.object_type(), since_n, limit)
        .await
        .map_err(|e| internal("changes", &e))?;
    let has_more = rows.len() as i64 == limit && rows.last().is_some_and(|r| r.modseq < current);
    let new_state = if has_more {
        rows.last().map(|r| r.modseq).unwrap_or(current)
    } else {
        current
    };
    // Fold each object's changes in the window into one of created/updated/destroyed.
    let mut order: Vec<String> = Vec::new();
    let mut first_last: HashMap<String, (String, String)> = HashMap::new();
    for r in rows {
        match first_last.get_mut(&r.object_id) {
            Some(fl) => fl.1 = r.op,
            None => {
                order.push(r.object_id.clone());
                first_last.insert(r.object_id, (r.op.clone(), r.op));
            }
        }
    }
    let (mut created, mut updated, mut destroyed) = (Vec::new(), Vec::new(), Vec::new());
    for id in order {
        let (first, last) = &first_last[&id];
        match (first.as_str(), last.as_str()) {
            ("created", "destroyed") => {}
            ("created", _) => created.push(id),
            (_, "destroyed") => destroyed.push(id),
            _ => updated.push(id),
        }
    }
    Ok(json!({
        "accountId": ctx.account(),
        "oldState": since,
        "newState": new_state.to_string(),
        "hasMoreChanges": has_more,
        "created": created,
        "updated": updated,
        "destroyed": destroyed,
    }))
}

/// RFC 3339 UTC date for Unix seconds.
pub fn utc(t: i64) -> Value {
    Value::String(sealpost_keystore::policy::format_time(t))
}
