//! ClientToken idempotency (reference §4, §5.7), shared by the actions that
//! take one (RunInstances, CreateLoadBalancer): the same token and
//! parameters answer the first reply again without a new resource; the same
//! token with other parameters is `IdempotentParameterMismatch`.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::{
    params::Params,
    reply::ApiError,
    world::{Answered, World},
};

/// Parameters that identify or sign a call rather than describe what it
/// asks for: a retry changes them, so ClientToken matching ignores them.
const PROTOCOL_PARAMS: &[&str] = &[
    "AccessKeyId",
    "Action",
    "Format",
    "SecurityToken",
    "Signature",
    "SignatureMethod",
    "SignatureNonce",
    "SignatureType",
    "SignatureVersion",
    "Timestamp",
    "Version",
];

/// A request's ClientToken (if any) and the parameters it stands for.
pub(crate) struct Idempotency {
    key: Option<(String, String)>,
    asked: BTreeMap<String, String>,
}

impl Idempotency {
    /// Reads and checks the request's ClientToken: at most 64 ASCII
    /// characters.
    pub(crate) fn of(key_id: &str, p: &Params) -> Result<Self, ApiError> {
        let token = p.value("ClientToken");
        if let Some(token) = token
            && (token.len() > 64 || !token.is_ascii())
        {
            return Err(ApiError::new(
                400,
                "InvalidClientToken.ValueNotSupported",
                "The ClientToken provided is invalid.",
            ));
        }
        Ok(Self {
            key: token.map(|t| (key_id.to_owned(), t.to_owned())),
            asked: p
                .pairs()
                .into_iter()
                .filter(|(k, _)| !PROTOCOL_PARAMS.contains(k))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        })
    }

    /// The token's earlier answer, when this is a retry of a call that ran.
    pub(crate) fn replay(&self, world: &World) -> Option<Result<Value, ApiError>> {
        let answered = world.tokens.get(self.key.as_ref()?)?;
        Some(if answered.params == self.asked {
            Ok(answered.reply.clone())
        } else {
            Err(ApiError::new(
                400,
                "IdempotentParameterMismatch",
                "Request uses a client token in a previous request but is not identical to that request.",
            ))
        })
    }

    /// Remembers `reply` under the token, if there is one.
    pub(crate) fn remember(self, world: &mut World, reply: &Value) {
        if let Some(key) = self.key {
            world.tokens.insert(
                key,
                Answered {
                    params: self.asked,
                    reply: reply.clone(),
                },
            );
        }
    }
}
