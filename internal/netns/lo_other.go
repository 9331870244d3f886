//go:build !linux

package netns

import "errors"

func loopbackUp() error { return errors.New("netns: network namespaces need Linux") }
