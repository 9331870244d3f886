package main

import (
	"context"
	"fmt"
	"io"
)

// runUser is implemented by the store engineer (placeholder).
func runUser(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return fmt.Errorf("user: not implemented yet")
}
