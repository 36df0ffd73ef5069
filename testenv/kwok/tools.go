//go:build tools

// Package tools pins the kwok program that scripts/build-testenv.sh builds.
package tools

import (
	_ "sigs.k8s.io/kwok/cmd/kwok"
)
