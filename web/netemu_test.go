package web_test

import (
	"context"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// setOffline takes u's page off the network (or back on) with DevTools
// network emulation: new requests and connections fail, navigator.onLine
// is false and the page gets an "offline" event. Unlike setOnline it also
// blocks new connections; like it, it leaves open sockets alone.
func setOffline(t *testing.T, u user, offline bool) {
	t.Helper()
	within(t, u, 10*time.Second, "network emulation", func(ctx context.Context) error {
		_, err := chromedp.Run(ctx, func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
			if _, err := cdp.Call(ctx, tg, network.Enable, network.EnableParams{}); err != nil {
				return chromedp.Void{}, err
			}
			if _, err := cdp.Call(ctx, tg, network.EmulateNetworkConditionsByRule, network.EmulateNetworkConditionsByRuleParams{
				MatchedNetworkConditions: []*network.Conditions{{Offline: offline, DownloadThroughput: -1, UploadThroughput: -1}},
			}); err != nil {
				return chromedp.Void{}, err
			}
			_, err := cdp.Call(ctx, tg, network.OverrideNetworkState, network.OverrideNetworkStateParams{Offline: offline, DownloadThroughput: -1, UploadThroughput: -1})
			return chromedp.Void{}, err
		})
		return err
	})
}
