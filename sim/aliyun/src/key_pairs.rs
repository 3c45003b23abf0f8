//! Key pairs (ImportKeyPair, DescribeKeyPairs, DeleteKeyPairs): regional,
//! public keys only. An instance keeps the key it was created with even
//! after its key pair is deleted, as on Aliyun.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use serde_json::{Value, json};
use sha1::{Digest, Sha1};

use crate::{
    cloud::{Cloud, lock},
    ecs::valid_name,
    params::{self, Params},
    reply::{ApiError, seconds},
    world::KeyPair,
};

pub(crate) fn import_key_pair(cloud: &Cloud, p: &Params) -> Result<Value, ApiError> {
    let region = p.region()?;
    let name = p.required("KeyPairName")?;
    let body = p.needed("PublicKeyBody")?;
    if !valid_name(name, 128) {
        return Err(ApiError::new(
            400,
            "InvalidKeyPairName.Malformed",
            "Specified Key Pair name is not valid.",
        ));
    }
    let Some(fingerprint) = fingerprint(body) else {
        return Err(ApiError::new(
            400,
            "InvalidPublicKeyBody.Malformed",
            "The PublicKeyBody format is not supported.",
        ));
    };
    let mut world = lock(&cloud.world);
    if world
        .key_pairs
        .iter()
        .any(|k| k.region == region.id && k.name == name)
    {
        return Err(ApiError::new(
            400,
            "KeyPair.AlreadyExist",
            "The key pair already exist.",
        ));
    }
    world.key_pairs.push(KeyPair {
        region: region.id,
        name: name.to_owned(),
        public_key: body.trim().to_owned(),
        fingerprint: fingerprint.clone(),
        created_at: cloud.clock.now(),
    });
    Ok(json!({ "KeyPairName": name, "KeyPairFingerPrint": fingerprint }))
}

/// The fingerprint of an OpenSSH public key line, or `None` when it is not
/// one: SHA-1 of the key blob in colon-separated hex, the shape of the
/// ECS docs' examples.
fn fingerprint(line: &str) -> Option<String> {
    const TYPES: &[&str] = &[
        "ssh-rsa",
        "ssh-ed25519",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
    ];
    let mut fields = line.split_whitespace();
    let kind = fields.next()?;
    let blob = STANDARD.decode(fields.next()?).ok()?;
    // The blob starts with its own type as an SSH string.
    let len = usize::try_from(u32::from_be_bytes(blob.get(..4)?.try_into().ok()?)).ok()?;
    if !TYPES.contains(&kind) || blob.get(4..4 + len)? != kind.as_bytes() {
        return None;
    }
    let digest = Sha1::digest(&blob);
    Some(
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
    )
}

pub(crate) fn describe_key_pairs(cloud: &Cloud, p: &Params) -> Result<Value, ApiError> {
    let region = p.region()?;
    let page = p.page()?;
    let world = lock(&cloud.world);
    let pairs: Vec<Value> = world
        .key_pairs
        .iter()
        .filter(|k| k.region == region.id)
        .filter(|k| {
            p.value("KeyPairName")
                .is_none_or(|n| params::matches(n, &k.name))
        })
        .filter(|k| {
            p.value("KeyPairFingerPrint")
                .is_none_or(|f| f == k.fingerprint)
        })
        .map(|k| {
            json!({
                "KeyPairName": k.name,
                "KeyPairFingerPrint": k.fingerprint,
                "CreationTime": seconds(k.created_at),
                "ResourceGroupId": "",
                "Tags": { "Tag": [] },
            })
        })
        .collect();
    Ok(Value::Object(page.answer("KeyPairs", "KeyPair", pairs)))
}

pub(crate) fn delete_key_pairs(cloud: &Cloud, p: &Params) -> Result<Value, ApiError> {
    let region = p.region()?;
    if p.value("KeyPairNames").is_none() {
        return Err(ApiError::missing("KeyPairNames"));
    }
    let names = p.json_list("KeyPairNames", 100)?.unwrap_or_default();
    // Instances keep the key they were created with (Instance::authorized_key).
    lock(&cloud.world)
        .key_pairs
        .retain(|k| !(k.region == region.id && names.contains(&k.name)));
    Ok(json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_need_a_real_openssh_key() {
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGXuJ0W/87pFQW/Ncl7diPAaKOB7KzBzK1+BAVw2czZe test@dcp";
        let fp = fingerprint(key).unwrap();
        assert_eq!(fp.len(), 20 * 3 - 1, "{fp}");
        // A blob whose embedded type disagrees with the line's.
        assert!(fingerprint(&key.replacen("ssh-ed25519", "ssh-rsa", 1)).is_none());
        assert!(fingerprint("not a key").is_none());
        assert!(fingerprint("").is_none());
    }
}
