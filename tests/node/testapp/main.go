// tm-testapp: the workload of the test node's smoke test (tests/node/smoke.sh). A static
// binary with nothing but the Go standard library, so its image is this one file.
//
//	GET /healthz  200 "ok" (the readiness and liveness probes)
//	GET /         what the pod sees: hostname, uid/gid, whether the ServiceAccount token and
//	              CA are mounted, the pod's resolv.conf, and whether the root fs is writable
//	GET /whoami   asks the apiserver, through the kubernetes Service (KUBERNETES_SERVICE_HOST,
//	              an IP: there is no DNS), who the mounted token is: a SelfSubjectReview,
//	              which every authenticated identity may create. Prints the status and body.
//	GET /fetch?url=U  GETs U from inside the pod (pod -> Service -> pod paths); prints the
//	              status and body.
//
// Usage: testapp [serve] | testapp -v. Listens on $PORT (default 8080); exits cleanly on
// SIGTERM/SIGINT. Any other argument is an error, so an image's ENTRYPOINT + CMD is checked.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"

func report(w http.ResponseWriter, _ *http.Request) {
	host, _ := os.Hostname()
	fmt.Fprintf(w, "hostname=%s\n", host)
	fmt.Fprintf(w, "uid=%d gid=%d\n", os.Getuid(), os.Getgid())
	for _, f := range []string{"token", "ca.crt", "namespace"} {
		st, err := os.Stat(saDir + "/" + f)
		if err != nil {
			fmt.Fprintf(w, "sa.%s=missing\n", f)
			continue
		}
		fmt.Fprintf(w, "sa.%s=present bytes=%d\n", f, st.Size())
	}
	if ns, err := os.ReadFile(saDir + "/namespace"); err == nil {
		fmt.Fprintf(w, "sa.namespace.value=%s\n", strings.TrimSpace(string(ns)))
	}
	// A readOnlyRootFilesystem container must fail here.
	if err := os.WriteFile("/probe-write", []byte("x"), 0o600); err != nil {
		fmt.Fprintf(w, "rootfs.writable=false (%v)\n", err)
	} else {
		fmt.Fprintf(w, "rootfs.writable=true\n")
		_ = os.Remove("/probe-write")
	}
	resolv, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		fmt.Fprintf(w, "resolv.conf: %v\n", err)
	} else {
		fmt.Fprintf(w, "resolv.conf (%d bytes):\n%s", len(resolv), resolv)
	}
	fmt.Fprintf(w, "env.KUBERNETES_SERVICE_HOST=%s\n", os.Getenv("KUBERNETES_SERVICE_HOST"))
	fmt.Fprintf(w, "args=%q\n", os.Args)
}

func whoami(w http.ResponseWriter, _ *http.Request) {
	token, err := os.ReadFile(saDir + "/token")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	caPEM, err := os.ReadFile(saDir + "/ca.crt")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	client := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
	url := "https://" + net.JoinHostPort(os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")) +
		"/apis/authentication.k8s.io/v1/selfsubjectreviews"
	body := `{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}`
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		http.Error(w, "request to "+url+" failed: "+err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	fmt.Fprintf(w, "status=%d\n%s\n", resp.StatusCode, out)
}

func fetch(w http.ResponseWriter, r *http.Request) {
	url := r.URL.Query().Get("url")
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		http.Error(w, "GET "+url+" failed: "+err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	fmt.Fprintf(w, "status=%d\n%s", resp.StatusCode, out)
}

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "-v":
			fmt.Println("tm-testapp 1")
			return
		case "serve":
		default:
			fmt.Fprintf(os.Stderr, "usage: %s [serve] | -v\n", os.Args[0])
			os.Exit(2)
		}
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/whoami", whoami)
	mux.HandleFunc("/fetch", fetch)
	mux.HandleFunc("/", report)
	srv := &http.Server{Addr: ":" + port, Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	log.Printf("tm-testapp listening on :%s", port)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
	log.Printf("tm-testapp stopped")
}
