// Command tm-teleport is `teleport` (v13) for the tests: the same CLI, with one difference for
// `start`: the Proxy runs with its web UI turned off. A module build of Teleport carries no web
// assets, and a Proxy that wants the UI refuses to start ("built without web assets"); v13 has
// no config-file switch for servicecfg.ProxyConfig.DisableWebInterface, so it is set here.
// The web API (/webapi/find, ALPN routing, connection upgrades) keeps running.
package main

import (
	"context"
	"os"

	"github.com/gravitational/teleport/lib/observability/metrics"
	"github.com/gravitational/teleport/lib/service"
	"github.com/gravitational/teleport/lib/utils"
	"github.com/gravitational/teleport/tool/teleport/common"
)

func init() {
	// As tool/teleport does.
	metrics.RegisterPrometheusCollectors(metrics.BuildCollector())
}

func main() {
	// InitOnly: parse flags and the config file (and run any command other than `start`), but
	// hand `start` back to us with its finished config.
	_, cmd, conf := common.Run(common.Options{Args: os.Args[1:], InitOnly: true})
	if cmd != "start" || conf == nil {
		return
	}
	conf.Proxy.DisableWebInterface = true
	conf.Log.Infof("Starting Teleport (tm-teleport launcher, web UI disabled)")
	if err := service.Run(context.Background(), *conf, nil); err != nil {
		utils.FatalError(err)
	}
}
