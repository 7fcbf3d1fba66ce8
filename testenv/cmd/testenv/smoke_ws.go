package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"k8s.io/client-go/rest"
)

// portForwardWebSocket reads the stand-in Envoy admin through pods/portforward over a
// WebSocket with the channel protocols kube-rs offers ("v5.channel.k8s.io,
// v4.channel.k8s.io"): per port a data channel (0) and an error channel (1), each opening
// with the port number (2 bytes, little endian), every message led by its channel byte.
func (s *smoke) portForwardWebSocket(ctx context.Context) error {
	pods, err := s.cs.CoreV1().Pods(s.ns).List(ctx, metav1ListSmoke())
	if err != nil || len(pods.Items) == 0 {
		return fmt.Errorf("no smoke pod: %v", err)
	}
	pod := pods.Items[0].Name
	tlsCfg, err := rest.TLSConfigFor(s.cfg)
	if err != nil {
		return err
	}
	u, err := url.Parse(s.cfg.Host)
	if err != nil {
		return err
	}
	u.Scheme = "wss"
	u.Path = fmt.Sprintf("/api/v1/namespaces/%s/pods/%s/portforward", s.ns, pod)
	u.RawQuery = "ports=15000"
	d := websocket.Dialer{TLSClientConfig: tlsCfg, HandshakeTimeout: 10 * time.Second,
		Subprotocols: []string{"v5.channel.k8s.io", "v4.channel.k8s.io"}}
	return poll(ctx, "Envoy admin through pods/portforward over WebSocket", func() (bool, error) {
		conn, resp, err := d.DialContext(ctx, u.String(), http.Header{})
		if err != nil {
			if resp != nil {
				return false, fmt.Errorf("%v (HTTP %d)", err, resp.StatusCode)
			}
			return false, err
		}
		defer conn.Close()
		proto := conn.Subprotocol()
		if err := conn.WriteMessage(websocket.BinaryMessage, append([]byte{0}, "GET /stats HTTP/1.0\r\n\r\n"...)); err != nil {
			return false, err
		}
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		var data, errs bytes.Buffer
		seen := map[byte]int{}
		for !strings.Contains(data.String(), "envoy stand-in /stats") {
			_, msg, err := conn.ReadMessage()
			if err != nil {
				return false, fmt.Errorf("read (%s): %v; data %q, error channel %q", proto, err, data.String(), errs.String())
			}
			if len(msg) == 0 {
				continue
			}
			ch, body := msg[0], msg[1:]
			seen[ch]++
			if seen[ch] == 1 && len(body) >= 2 {
				body = body[2:] // the port number that opens each channel
			}
			switch ch {
			case 0:
				data.Write(body)
			case 1:
				errs.Write(body)
				if errs.Len() > 0 {
					return false, fmt.Errorf("error channel: %s", errs.String())
				}
			}
		}
		fmt.Printf("     GET /stats via pods/portforward over WebSocket (%s) -> %q\n", proto, lastLine(data.String()))
		return true, nil
	})
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
