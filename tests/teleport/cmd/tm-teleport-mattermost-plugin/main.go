// Command tm-teleport-mattermost-plugin runs Teleport's own Go Mattermost access plugin
// (github.com/gravitational/teleport/integrations/access/mattermost, v13), which the module
// ships as a library only. It is the reference peer the tests compare our plugin with.
//
//	tm-teleport-mattermost-plugin start -c mattermost.toml [-d]
//	tm-teleport-mattermost-plugin version
//
// The config is the plugin's TOML: [teleport] addr/identity or client_crt/client_key/root_cas,
// [mattermost] url/token/recipients, [role_to_recipients], [log] output/severity.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	log "github.com/sirupsen/logrus"

	"github.com/gravitational/teleport"
	"github.com/gravitational/teleport/integrations/access/mattermost"
	"github.com/gravitational/teleport/integrations/lib/logger"
)

func usage() {
	fmt.Fprintf(os.Stderr, "usage:\n  %[1]s start -c FILE [-d]   run the plugin with a TOML config\n  %[1]s version\n", os.Args[0])
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	switch os.Args[1] {
	case "version":
		fmt.Printf("tm-teleport-mattermost-plugin (Teleport %s integrations/access/mattermost)\n", teleport.Version)
		return
	case "start":
	case "-h", "--help", "help":
		usage()
		return
	default:
		usage()
		os.Exit(2)
	}
	fs := flag.NewFlagSet("start", flag.ExitOnError)
	path := fs.String("c", "/etc/teleport-mattermost.toml", "path to the TOML config")
	fs.StringVar(path, "config", *path, "same as -c")
	debug := fs.Bool("d", false, "debug logging")
	fs.BoolVar(debug, "debug", false, "same as -d")
	_ = fs.Parse(os.Args[2:])

	logger.Init()
	conf, err := mattermost.LoadConfig(*path)
	if err != nil {
		log.WithError(err).Fatal("loading config")
	}
	if *debug {
		conf.Log.Severity = "debug"
	}
	if err := logger.Setup(conf.Log); err != nil {
		log.WithError(err).Fatal("setting up logging")
	}

	app := mattermost.NewMattermostApp(conf)
	// SIGTERM/SIGINT: graceful shutdown, then a forced close after 15 s.
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := app.Shutdown(ctx); err != nil {
			app.Close()
		}
	}()
	if err := app.Run(context.Background()); err != nil {
		log.WithError(err).Fatal("plugin stopped")
	}
}
