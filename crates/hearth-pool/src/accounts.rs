//! Customer accounts: API keys kept only as hashes in the pool's store, each with a rate limit,
//! a cap on requests in flight and a quota, and usage metered per model. A customer is charged
//! exactly what the nodes were paid for its jobs plus the pool's fee
//! ([`PoolConfig::fee_basis_points`]), in integer micro-credits.
//!
//! Keys from the config file (`api_keys`) are accepted too, without a quota: the embedded demo
//! pool and tests use them. Operators make keys with `hearth-pool keys add`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::config::PoolConfig;
use crate::error::ApiError;
use crate::queue::{now_unix_ms, random_id};
use crate::store::{PoolStore, StoreError, UsageCharge};

/// A customer's API key as the pool keeps it (the secret itself is never stored).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerKey {
    /// `key_…`, for listing and revoking.
    pub id: String,
    /// Who it is for, as the operator wrote it.
    pub name: String,
    /// sha256 of the secret, hex.
    pub key_hash: String,
    pub created_unix_ms: u64,
    pub revoked_unix_ms: Option<u64>,
    /// Requests a minute, at most.
    pub requests_per_minute: u32,
    /// Requests in flight at once, at most.
    pub max_concurrent: u32,
    /// Micro-credits the key may be charged in all; `None`: no limit.
    pub quota_micro_credits: Option<u64>,
}

/// What a key used of one model.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Jobs paid for.
    pub jobs: u64,
    /// Units billed (tokens, images).
    pub units: u64,
    /// Micro-credits charged: what the nodes were paid plus the fee.
    pub charged_micro_credits: u64,
}

/// What the operator asks for in a new key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewKey {
    pub name: String,
    #[serde(default = "default_rpm")]
    pub requests_per_minute: u32,
    #[serde(default = "default_concurrency")]
    pub max_concurrent: u32,
    #[serde(default)]
    pub quota_micro_credits: Option<u64>,
}

fn default_rpm() -> u32 {
    600
}

fn default_concurrency() -> u32 {
    16
}

/// A key just made: its record and the secret, shown once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedKey {
    pub key: CustomerKey,
    pub secret: String,
}

/// sha256 of an API key's secret, hex.
pub fn hash_secret(secret: &str) -> String {
    hearth_protocol::sha256_hex(secret.as_bytes())
}

/// Make a key and store it.
pub async fn add_key(store: &dyn PoolStore, new: &NewKey) -> Result<IssuedKey, StoreError> {
    if new.name.trim().is_empty() || new.name.len() > 200 {
        return Err(StoreError::Invalid(
            "a key needs a name of 1 to 200 bytes".into(),
        ));
    }
    if new.requests_per_minute == 0 || new.max_concurrent == 0 {
        return Err(StoreError::Invalid(
            "requests_per_minute and max_concurrent must be at least 1".into(),
        ));
    }
    let secret = random_id("sk-hearth-");
    let key = CustomerKey {
        id: random_id("key_")[..20].to_owned(),
        name: new.name.trim().to_owned(),
        key_hash: hash_secret(&secret),
        created_unix_ms: now_unix_ms(),
        revoked_unix_ms: None,
        requests_per_minute: new.requests_per_minute,
        max_concurrent: new.max_concurrent,
        quota_micro_credits: new.quota_micro_credits,
    };
    store.put_customer_key(&key).await?;
    Ok(IssuedKey { key, secret })
}

/// Revoke key `id`; the revoked record.
pub async fn revoke_key(store: &dyn PoolStore, id: &str) -> Result<CustomerKey, StoreError> {
    let mut key = store
        .customer_keys()
        .await?
        .into_iter()
        .find(|k| k.id == id)
        .ok_or_else(|| StoreError::NotFound(format!("key {id}")))?;
    key.revoked_unix_ms.get_or_insert_with(now_unix_ms);
    store.put_customer_key(&key).await?;
    Ok(key)
}

/// One line per key and model: `id,name,revoked,model,jobs,units,charged_micro_credits`.
pub async fn usage_csv(store: &dyn PoolStore) -> Result<String, StoreError> {
    let keys = store.customer_keys().await?;
    let mut csv = String::from("key_id,name,revoked,model,jobs,units,charged_micro_credits\n");
    for (key_id, model, usage) in store.usage().await? {
        let key = keys.iter().find(|k| k.id == key_id);
        let name = key
            .map_or("", |k| k.name.as_str())
            .replace([',', '\n'], " ");
        let revoked = key.is_some_and(|k| k.revoked_unix_ms.is_some());
        csv.push_str(&format!(
            "{key_id},{name},{revoked},{model},{},{},{}\n",
            usage.jobs, usage.units, usage.charged_micro_credits
        ));
    }
    Ok(csv)
}

/// The keys the pool accepts, and each one's rate allowance and requests in flight.
#[derive(Debug)]
pub struct Accounts {
    store: Arc<dyn PoolStore>,
    config: Arc<PoolConfig>,
    /// By secret hash; config keys first, stored keys read at start and kept current.
    keys: RwLock<HashMap<String, CustomerKey>>,
    /// Micro-credits charged so far, by key id.
    charged: Mutex<HashMap<String, u64>>,
    /// By key id: what each may still ask within a minute.
    minutes: Mutex<crate::rate::PerMinute<String>>,
    in_flight: Arc<Mutex<HashMap<String, u32>>>,
}

/// A customer request let in: its key, and its place among the key's requests in flight
/// (given back when dropped).
#[derive(Debug)]
pub struct Admission {
    pub key_id: String,
    in_flight: Arc<Mutex<HashMap<String, u32>>>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = in_flight.get_mut(&self.key_id) {
            *n = n.saturating_sub(1);
        }
    }
}

impl Accounts {
    /// The accounts of `store` and the config's own keys.
    pub async fn load(
        store: Arc<dyn PoolStore>,
        config: Arc<PoolConfig>,
    ) -> Result<Self, StoreError> {
        let mut keys = HashMap::new();
        for (i, secret) in config.api_keys.iter().enumerate() {
            let key = CustomerKey {
                id: format!("config-{i}"),
                name: "from the config file".into(),
                key_hash: hash_secret(secret),
                created_unix_ms: 0,
                revoked_unix_ms: None,
                requests_per_minute: u32::MAX,
                max_concurrent: u32::MAX,
                quota_micro_credits: None,
            };
            keys.insert(key.key_hash.clone(), key);
        }
        let mut charged = HashMap::new();
        for key in store.customer_keys().await? {
            keys.insert(key.key_hash.clone(), key);
        }
        for (key_id, _, usage) in store.usage().await? {
            *charged.entry(key_id).or_insert(0u64) += usage.charged_micro_credits;
        }
        Ok(Self {
            store,
            config,
            keys: RwLock::new(keys),
            charged: Mutex::new(charged),
            minutes: Mutex::default(),
            in_flight: Arc::default(),
        })
    }

    /// Make a key (stored, and accepted at once).
    pub async fn add(&self, new: &NewKey) -> Result<IssuedKey, StoreError> {
        let issued = add_key(self.store.as_ref(), new).await?;
        self.keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(issued.key.key_hash.clone(), issued.key.clone());
        Ok(issued)
    }

    /// Revoke a key (refused from the next request on).
    pub async fn revoke(&self, id: &str) -> Result<CustomerKey, StoreError> {
        let key = revoke_key(self.store.as_ref(), id).await?;
        self.keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.key_hash.clone(), key.clone());
        Ok(key)
    }

    /// Every stored key (not the config's).
    pub async fn list(&self) -> Result<Vec<CustomerKey>, StoreError> {
        self.store.customer_keys().await
    }

    /// Let a request in: a known, unrevoked key within its quota, its rate and its cap on
    /// requests in flight. 401, or 429 with `Retry-After` in OpenAI's shape.
    pub fn admit(&self, headers: &HeaderMap) -> Result<Admission, ApiError> {
        let secret = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(ApiError::bad_api_key)?;
        let key = self
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&hash_secret(secret))
            .cloned()
            .ok_or_else(ApiError::bad_api_key)?;
        if key.revoked_unix_ms.is_some() {
            return Err(ApiError::bad_api_key());
        }
        if let Some(quota) = key.quota_micro_credits {
            let charged = self
                .charged
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key.id)
                .copied()
                .unwrap_or(0);
            if charged >= quota {
                return Err(ApiError::quota_exceeded(charged, quota));
            }
        }
        self.minutes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(key.id.clone(), key.requests_per_minute, now_unix_ms())
            .map_err(|retry| {
                ApiError::rate_limited(
                    format!(
                        "Rate limit reached: {} requests per minute for this key.",
                        key.requests_per_minute
                    ),
                    retry,
                )
            })?;
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let running = in_flight.entry(key.id.clone()).or_insert(0);
        if *running >= key.max_concurrent {
            return Err(ApiError::rate_limited(
                format!(
                    "Too many requests at once: {} in flight is this key's limit.",
                    key.max_concurrent
                ),
                1,
            ));
        }
        *running += 1;
        Ok(Admission {
            key_id: key.id,
            in_flight: Arc::clone(&self.in_flight),
        })
    }

    /// What key `key_id` owes for a job of `model` worth `units` whose nodes are paid
    /// `paid_to_nodes`: that plus the pool's fee. Stored with the job's receipts.
    pub fn charge_for(
        &self,
        key_id: &str,
        model: &str,
        units: u64,
        paid_to_nodes: u64,
    ) -> UsageCharge {
        let fee = paid_to_nodes
            .saturating_mul(u64::from(self.config.fee_basis_points))
            .div_ceil(10_000);
        UsageCharge {
            key_id: key_id.to_owned(),
            model: model.to_owned(),
            units,
            micro_credits: paid_to_nodes.saturating_add(fee),
        }
    }

    /// Count a stored `charge` against its key's quota.
    pub fn charged(&self, charge: &UsageCharge) {
        let mut charged = self.charged.lock().unwrap_or_else(|e| e.into_inner());
        let total = charged.entry(charge.key_id.clone()).or_insert(0);
        *total = total.saturating_add(charge.micro_credits);
    }
}
