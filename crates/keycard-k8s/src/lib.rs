//! Kubernetes objects as keycard reads them: from files, directories and
//! stdin, multi-document YAML or JSON, `List` kinds unwrapped, each object
//! with the file and line it came from.
//!
//! ```
//! use keycard_k8s::{parse_str, LoadOptions};
//!
//! let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    spec:\n      containers: [{name: app, image: nginx}]\n";
//! let (objects, errors) = parse_str("deploy.yaml", text, &LoadOptions::default());
//! assert!(errors.is_empty());
//! let pod = objects[0].pod_template().unwrap();
//! assert_eq!(pod.path, "spec.template");
//! assert_eq!(objects[0].source.line, 1);
//! ```

mod load;
mod object;

pub use load::{is_manifest_path, load_paths, parse_str, LoadError, LoadOptions, Loaded};
pub use object::{is_known_kind, Object, PodTemplate, Source, WORKLOAD_KINDS};
