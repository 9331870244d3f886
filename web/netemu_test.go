package web_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// setOnline switches the browser's navigator.onLine (and fires its
// offline / online events) through DevTools. It does not touch sockets:
// DevTools' offline emulation leaves open WebSockets open.
func setOnline(t *testing.T, u user, on bool) { emulateNetwork(t, u, !on, false) }

// setOffline takes u's page off the network (or back on): like setOnline,
// and new requests and connections fail too. Open sockets stay open.
func setOffline(t *testing.T, u user, offline bool) { emulateNetwork(t, u, offline, true) }

func emulateNetwork(t *testing.T, u user, offline, blockNew bool) {
	t.Helper()
	within(t, u, 10*time.Second, fmt.Sprintf("offline=%v", offline), func(ctx context.Context) error {
		_, err := chromedp.Run(ctx, func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
			if blockNew {
				if _, err := cdp.Call(ctx, tg, network.Enable, network.EnableParams{}); err != nil {
					return chromedp.Void{}, err
				}
				if _, err := cdp.Call(ctx, tg, network.EmulateNetworkConditionsByRule, network.EmulateNetworkConditionsByRuleParams{
					MatchedNetworkConditions: []*network.Conditions{{Offline: offline, DownloadThroughput: -1, UploadThroughput: -1}},
				}); err != nil {
					return chromedp.Void{}, err
				}
			}
			_, err := cdp.Call(ctx, tg, network.OverrideNetworkState, network.OverrideNetworkStateParams{Offline: offline, DownloadThroughput: -1, UploadThroughput: -1})
			return chromedp.Void{}, err
		})
		return err
	})
}
