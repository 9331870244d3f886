package main

import (
	"context"
	"fmt"
	"io"
)

// runBench is implemented by the load-generator engineer (placeholder).
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return fmt.Errorf("bench: not implemented yet")
}
