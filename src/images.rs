//! The sample app's container images: the manifests meshstack writes itself
//! (`stacks/ecommerce/`), so the one place where meshstack decides what code runs in the
//! cluster besides the charts.
//!
//! The defaults are the seed demo's images, by tag (its manifests, `../shared/seed`, read
//! 2026-12-06): tags on one person's Docker Hub account, which can be moved to other code at
//! any time. Their digests could not be read when this was written (no registry reachable), so
//! the defaults stay tags and `plan` says so; a stack pins each one by digest under `images:`
//! (`docker buildx imagetools inspect IMAGE` or `crane digest IMAGE` print it), and only
//! references by digest are accepted there.

/// One of the app's images: its key under `images:`, its template placeholder, its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppImage {
    pub key: &'static str,
    pub placeholder: &'static str,
    pub default: &'static str,
}

/// Every image of the app, in the order the manifests list them.
pub const APP_IMAGES: [AppImage; 5] = [
    AppImage {
        key: "graphql",
        placeholder: "IMAGE_GRAPHQL",
        default: "lukondefmwila/ecommerce-graphql:0.1.6",
    },
    AppImage {
        key: "orders-v1",
        placeholder: "IMAGE_ORDERS_V1",
        default: "lukondefmwila/ecommerce-orders:0.2.9",
    },
    AppImage {
        key: "orders-v2",
        placeholder: "IMAGE_ORDERS_V2",
        default: "lukondefmwila/ecommerce-orders:0.3.7-alpha",
    },
    AppImage {
        key: "products-v1",
        placeholder: "IMAGE_PRODUCTS_V1",
        default: "lukondefmwila/ecommerce-products:0.1.5",
    },
    AppImage {
        key: "products-v2",
        placeholder: "IMAGE_PRODUCTS_V2",
        default: "lukondefmwila/ecommerce-products:0.1.6-alpha",
    },
];

/// Whether `reference` names its image by digest (`NAME[:TAG]@sha256:<64 hex>`): the only form
/// whose code cannot change under the same name.
pub fn by_digest(reference: &str) -> bool {
    reference.split_once("@sha256:").is_some_and(|(name, hex)| {
        !name.is_empty() && hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// What is wrong with `reference` as a pinned image under `images:`, if anything.
pub fn pin_problem(reference: &str) -> Option<String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "./_-:@".contains(c);
    if let Some(c) = reference.chars().find(|c| !allowed(*c)) {
        return Some(format!(
            "`{reference}` contains {c:?}; an image reference has letters, digits and ./_-:@"
        ));
    }
    if !by_digest(reference) {
        return Some(format!(
            "`{reference}` is not pinned by digest; write NAME@sha256:<64 hex digits> (a tag \
             can be moved to other code; `crane digest IMAGE` or `docker buildx imagetools \
             inspect IMAGE` print the digest)"
        ));
    }
    None
}

/// The app's images that run by tag rather than by digest, with the stack's `images:`
/// applied: `(key, reference)`.
pub fn by_tag(pinned: &std::collections::BTreeMap<String, String>) -> Vec<(&'static str, String)> {
    APP_IMAGES
        .iter()
        .map(|i| {
            let reference = pinned
                .get(i.key)
                .cloned()
                .unwrap_or_else(|| i.default.to_string());
            (i.key, reference)
        })
        .filter(|(_, r)| !by_digest(r))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn only_references_by_digest_are_pins() {
        assert!(by_digest(&format!(
            "lukondefmwila/ecommerce-graphql@{DIGEST}"
        )));
        assert!(by_digest(&format!("r.example:5000/a/b:1.0@{DIGEST}")));
        assert!(!by_digest("lukondefmwila/ecommerce-graphql:0.1.6"));
        assert!(!by_digest("x@sha256:abc"));
        assert!(!by_digest(&format!("@{DIGEST}")));
        assert!(pin_problem(&format!("a/b@{DIGEST}")).is_none());
        assert!(pin_problem("a/b:1.0")
            .unwrap()
            .contains("not pinned by digest"));
        assert!(pin_problem(&format!("a/b\n@{DIGEST}"))
            .unwrap()
            .contains("contains"));
    }

    #[test]
    fn the_defaults_are_the_seeds_tags_and_all_run_by_tag() {
        let none = Default::default();
        assert_eq!(by_tag(&none).len(), APP_IMAGES.len());
        let pinned = [("graphql".to_string(), format!("a/b@{DIGEST}"))].into();
        let left: Vec<_> = by_tag(&pinned).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            left,
            ["orders-v1", "orders-v2", "products-v1", "products-v2"]
        );
    }
}
