/*
 * tm-pause: the sandbox ("infra") process of every pod on the test node (tests/node/).
 *
 * It holds the pod's namespaces open and does nothing else: as PID 1 of the pod's PID
 * namespace it reaps any child that gets reparented to it, and it exits on SIGTERM or SIGINT
 * (the runtime sends SIGTERM when the pod sandbox stops, SIGKILL after the grace period).
 * Built static (gcc -static) so the image is this one file.
 *
 *   tm-pause            # wait for SIGTERM/SIGINT
 *   tm-pause -v         # print the version and exit
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define VERSION "tm-pause 1"

static volatile sig_atomic_t stop_signal;

static void on_stop(int sig) { stop_signal = sig; }

/* SIGCHLD only needs to interrupt pause(); the reaping happens in the main loop. */
static void on_child(int sig) { (void)sig; }

static void reap(void) {
    int status;
    /* Collect every child that has exited, without blocking on the live ones. */
    while (waitpid(-1, &status, WNOHANG) > 0) {
    }
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        puts(VERSION);
        return 0;
    }
    if (getpid() != 1) {
        fprintf(stderr, "%s: warning: not PID 1\n", VERSION);
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_stop;
    if (sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGINT, &sa, NULL) < 0) {
        perror("sigaction");
        return 1;
    }
    sa.sa_handler = on_child;
    sa.sa_flags = SA_NOCLDSTOP;
    if (sigaction(SIGCHLD, &sa, NULL) < 0) {
        perror("sigaction");
        return 1;
    }

    /* Block the signals we handle so none can slip in between the check and the wait:
     * sigsuspend() atomically unblocks them while sleeping. */
    sigset_t handled, old;
    sigemptyset(&handled);
    sigaddset(&handled, SIGTERM);
    sigaddset(&handled, SIGINT);
    sigaddset(&handled, SIGCHLD);
    sigprocmask(SIG_BLOCK, &handled, &old);
    while (!stop_signal) {
        reap();
        sigsuspend(&old);
    }
    reap();
    fprintf(stderr, "%s: shutting down on signal %d\n", VERSION, (int)stop_signal);
    return 0;
}
