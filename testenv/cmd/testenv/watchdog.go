package main

// watchdog: stops a cluster whose directory was deleted without `local-cluster stop` (a test
// that removes its temporary directory, or panics and lets it be removed): once the file
// --watch names is gone, every process group in --pgids gets SIGTERM, then SIGKILL after
// 2 s. It exits by itself when none of the groups is left (a normal stop).

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func runWatchdog(ctx context.Context, args []string) error {
	fs := newFlags("watchdog")
	watch := fs.String("watch", "", "file whose removal means the cluster was abandoned")
	pgids := fs.String("pgids", "", "comma-separated process groups of the cluster")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var groups []int
	for _, s := range strings.Split(*pgids, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		g, err := strconv.Atoi(s)
		if err != nil || g <= 1 {
			return fmt.Errorf("--pgids: %q is not a process group", s)
		}
		groups = append(groups, g)
	}
	alive := func() []int {
		var live []int
		for _, g := range groups {
			if err := syscall.Kill(-g, 0); err == nil || errors.Is(err, syscall.EPERM) {
				live = append(live, g)
			}
		}
		return live
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
		live := alive()
		if len(live) == 0 {
			return nil
		}
		if _, err := os.Stat(*watch); err == nil || !errors.Is(err, os.ErrNotExist) {
			continue
		}
		log.Printf("%s is gone: stopping process groups %v", *watch, live)
		for _, g := range live {
			_ = syscall.Kill(-g, syscall.SIGTERM)
		}
		time.Sleep(2 * time.Second)
		for _, g := range alive() {
			_ = syscall.Kill(-g, syscall.SIGKILL)
		}
		return nil
	}
}
