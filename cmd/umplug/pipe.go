package main

import (
	"context"
	"fmt"
	"io"
)

// runPipe is implemented by the client engineer (placeholder).
func runPipe(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return fmt.Errorf("pipe: not implemented yet")
}
