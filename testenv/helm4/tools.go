//go:build tools

// Package tools pins the commands scripts/local-cluster builds from this module.
package tools

import (
	_ "helm.sh/helm/v4/cmd/helm"
)
