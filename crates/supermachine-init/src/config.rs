//! The process config baked into the image: the OCI *image* config's `config` object
//! (`Entrypoint`, `Cmd`, `Env`, `WorkingDir`, `User`), bare or wrapped as `{"config": {...}}`
//! (also `"Config"`, the `docker inspect` spelling), or an OCI *runtime* spec `process` object
//! (`{"process": {"args", "env", "cwd", "user": {"uid", "gid"}}}`).

use serde_json::{Map, Value};

/// The fields init-oci uses. `None` = not set (absent or `null`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `Entrypoint`.
    pub entrypoint: Option<Vec<String>>,
    /// `Cmd`.
    pub cmd: Option<Vec<String>>,
    /// `Env` (`KEY=VALUE` strings).
    pub env: Option<Vec<String>>,
    /// `WorkingDir`.
    pub working_dir: Option<String>,
    /// `User` (`uid`, `uid:gid`, `name`, `name:group`, …).
    pub user: Option<String>,
}

fn strings(obj: &Map<String, Value>, key: &str) -> Result<Option<Vec<String>>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) if !s.contains('\0') => Ok(s.clone()),
                _ => Err(format!("{key}: expected an array of strings without NUL bytes")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(format!("{key}: expected an array of strings")),
    }
}

fn string(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.contains('\0') => Ok(Some(s.clone())),
        Some(_) => Err(format!("{key}: expected a string")),
    }
}

impl ImageConfig {
    /// Parses the JSON file's bytes. The error is one line (serde_json's position included).
    pub fn parse(bytes: &[u8]) -> Result<ImageConfig, String> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"))?;
        let Value::Object(top) = v else { return Err("expected a JSON object".into()) };
        if let Some(p) = top.get("process") {
            let Value::Object(p) = p else { return Err("process: expected an object".into()) };
            return Self::from_runtime_process(p);
        }
        let obj = match top.get("config").or_else(|| top.get("Config")) {
            Some(Value::Object(o)) => o,
            Some(Value::Null) => return Ok(ImageConfig::default()),
            Some(_) => return Err("config: expected an object".into()),
            None => &top,
        };
        Ok(ImageConfig {
            entrypoint: strings(obj, "Entrypoint")?,
            cmd: strings(obj, "Cmd")?,
            env: strings(obj, "Env")?,
            working_dir: string(obj, "WorkingDir")?,
            user: string(obj, "User")?,
        })
    }

    fn from_runtime_process(p: &Map<String, Value>) -> Result<ImageConfig, String> {
        let user = match p.get("user") {
            None | Some(Value::Null) => None,
            Some(Value::Object(u)) => {
                let id = |k: &str| match u.get(k) {
                    None | Some(Value::Null) => Ok(0),
                    Some(v) => v
                        .as_u64()
                        .filter(|n| *n <= u32::MAX as u64)
                        .ok_or_else(|| format!("process.user.{k}: expected a number")),
                };
                Some(format!("{}:{}", id("uid")?, id("gid")?))
            }
            Some(_) => return Err("process.user: expected an object".into()),
        };
        Ok(ImageConfig {
            entrypoint: strings(p, "args").map_err(|e| format!("process.{e}"))?,
            cmd: None,
            env: strings(p, "env").map_err(|e| format!("process.{e}"))?,
            working_dir: string(p, "cwd").map_err(|e| format!("process.{e}"))?,
            user,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const FULL: &str = r#"{"architecture":"amd64","os":"linux","config":{"User":"app","Env":["PATH=/usr/bin:/bin","A=1"],
        "Entrypoint":["/docker-entrypoint.sh"],"Cmd":["nginx","-g","daemon off;"],"WorkingDir":"/srv","Labels":{"x":"y"}},
        "rootfs":{"type":"layers","diff_ids":[]}}"#;

    #[test]
    fn wrapped_and_bare_shapes() {
        let wrapped = ImageConfig::parse(FULL.as_bytes()).unwrap();
        assert_eq!(wrapped.entrypoint, Some(vec!["/docker-entrypoint.sh".to_string()]));
        assert_eq!(wrapped.cmd.as_ref().unwrap().len(), 3);
        assert_eq!(wrapped.user.as_deref(), Some("app"));
        assert_eq!(wrapped.working_dir.as_deref(), Some("/srv"));
        let bare = ImageConfig::parse(
            br#"{"Entrypoint":["/docker-entrypoint.sh"],"Cmd":["nginx","-g","daemon off;"],
            "Env":["PATH=/usr/bin:/bin","A=1"],"WorkingDir":"/srv","User":"app"}"#,
        )
        .unwrap();
        assert_eq!(bare, wrapped);
        let inspect =
            ImageConfig::parse(br#"{"Id":"sha256:x","Config":{"Cmd":["sh"],"Entrypoint":null,"Env":null}}"#).unwrap();
        assert_eq!(inspect, ImageConfig { cmd: Some(vec!["sh".into()]), ..Default::default() });
        assert_eq!(ImageConfig::parse(b"{}").unwrap(), ImageConfig::default());
        assert_eq!(ImageConfig::parse(br#"{"config":null}"#).unwrap(), ImageConfig::default());
    }

    #[test]
    fn runtime_spec_process() {
        let c = ImageConfig::parse(
            br#"{"ociVersion":"1.0.2","process":{"args":["/bin/app","-v"],"env":["X=1"],
            "cwd":"/work","user":{"uid":1000,"gid":100}}}"#,
        )
        .unwrap();
        assert_eq!(c.entrypoint, Some(vec!["/bin/app".to_string(), "-v".to_string()]));
        assert_eq!(c.user.as_deref(), Some("1000:100"));
        assert_eq!(c.working_dir.as_deref(), Some("/work"));
        assert!(ImageConfig::parse(br#"{"process":{"user":{"uid":-1}}}"#).is_err());
    }

    #[test]
    fn bad_json_and_types() {
        for bad in [
            &b"{"[..],
            b"[]",
            b"\"x\"",
            b"{\"Cmd\":\"echo hi\"}",
            b"{\"Cmd\":[1]}",
            b"{\"Env\":{}}",
            b"{\"User\":0}",
            b"{\"config\":[]}",
            b"{\"Cmd\":[\"a\\u0000b\"]}",
            b"",
            b"{\"process\":1}",
        ] {
            assert!(ImageConfig::parse(bad).is_err(), "{:?} should be rejected", String::from_utf8_lossy(bad));
        }
        let e = ImageConfig::parse(b"{\"Cmd\": [").unwrap_err();
        assert!(e.starts_with("invalid JSON:") && !e.contains('\n'), "{e}");
    }
}
