package main

// authn: an EKS-style webhook token authenticator for kube-apiserver
// (--authentication-token-webhook-config-file). It follows aws-iam-authenticator v0.6.13's
// token verifier (pkg/token/token.go, read from the module source on 2026-12-06):
//   - token "k8s-aws-v1." + base64url (no padding) of a presigned STS URL, at most 4 KiB;
//   - https, host sts.amazonaws.com or sts.<region>.amazonaws.com[.cn] (or the STS endpoint
//     given here), path "/", only the allow-listed query parameters, each once;
//   - Action=GetCallerIdentity, x-k8s-aws-id among X-Amz-SignedHeaders,
//     0 <= X-Amz-Expires <= 900, X-Amz-Date present and not older than 15 minutes;
//   - then a GET of that URL, sent to --sts-endpoint instead of AWS (the Host header stays the
//     signed STS host), with x-k8s-aws-id: <--cluster-name> (so STS, checking the signature, binds the token to the
//     cluster) and Accept: application/json; the ARN of the answer (JSON or STS's XML) is
//     canonicalized (assumed-role -> role) and mapped to a user in system:masters, as EKS
//     maps the cluster creator.
// What it does not model: no aws-auth ConfigMap or access entries (every identity STS
// vouches for is a cluster admin), no caching, no metrics. moto answers only requests whose
// Authorization header names the service, so by default (--moto-compat) the presigned
// credential is also sent in header form. moto does not check SigV4
// signatures, so the cluster binding would go unchecked; with --aws-secret-access-key this
// program recomputes the signature itself (with the cluster name as the header's value) and
// refuses a token signed for another cluster or with another key.

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

const (
	tokenPrefix      = "k8s-aws-v1."
	clusterIDHeader  = "x-k8s-aws-id"
	presignedExpiry  = 15 * time.Minute
	maxTokenLenBytes = 4096
)

var stsHost = regexp.MustCompile(`^sts(\.[a-z0-9-]+)?\.amazonaws\.com(\.cn)?$`)

var allowedParams = map[string]bool{
	"action": true, "version": true, "x-amz-algorithm": true, "x-amz-credential": true,
	"x-amz-date": true, "x-amz-expires": true, "x-amz-security-token": true,
	"x-amz-signature": true, "x-amz-signedheaders": true,
}

type verifier struct {
	cluster    string
	sts        *url.URL
	secretKey  string
	motoCompat bool
	client     *http.Client
	now        func() time.Time
}

type identity struct {
	ARN, CanonicalARN, Account, UserID, AccessKeyID string
}

func (v *verifier) verify(token string) (*identity, error) {
	if len(token) > maxTokenLenBytes {
		return nil, errors.New("token is too large")
	}
	if !strings.HasPrefix(token, tokenPrefix) {
		return nil, fmt.Errorf("token is missing expected %q prefix", tokenPrefix)
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(token, tokenPrefix))
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(string(raw))
	if err != nil {
		return nil, err
	}
	if u.Scheme != "https" {
		return nil, fmt.Errorf("unexpected scheme %q in pre-signed URL", u.Scheme)
	}
	if !stsHost.MatchString(u.Host) && u.Host != v.sts.Host {
		return nil, fmt.Errorf("unexpected hostname %q in pre-signed URL", u.Host)
	}
	if u.Path != "/" {
		return nil, errors.New("unexpected path in pre-signed URL")
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, errors.New("malformed query parameter")
	}
	lower := url.Values{}
	for k, vs := range q {
		lk := strings.ToLower(k)
		if !allowedParams[lk] {
			return nil, fmt.Errorf("non-whitelisted query parameter %q", k)
		}
		if len(vs) != 1 || lower.Has(lk) {
			return nil, fmt.Errorf("duplicate query parameter %q", k)
		}
		lower.Set(lk, vs[0])
	}
	if lower.Get("action") != "GetCallerIdentity" {
		return nil, errors.New("unexpected action parameter in pre-signed URL")
	}
	signed := false
	for _, h := range strings.Split(lower.Get("x-amz-signedheaders"), ";") {
		signed = signed || strings.EqualFold(h, clusterIDHeader)
	}
	if !signed {
		return nil, fmt.Errorf("client did not sign the %s header in the pre-signed URL", clusterIDHeader)
	}
	expires, err := strconv.Atoi(lower.Get("x-amz-expires"))
	if err != nil || expires < 0 || expires > 900 {
		return nil, fmt.Errorf("invalid X-Amz-Expires parameter in pre-signed URL: %d", expires)
	}
	date, err := time.Parse("20060102T150405Z", lower.Get("x-amz-date"))
	if err != nil {
		return nil, fmt.Errorf("X-Amz-Date parameter must be present and valid: %v", err)
	}
	if v.now().After(date.Add(presignedExpiry)) {
		return nil, fmt.Errorf("X-Amz-Date parameter is expired (15 minute expiration) %s", date)
	}
	if v.secretKey != "" {
		if err := checkSignature(u, q, v.cluster, v.secretKey); err != nil {
			return nil, err
		}
	}
	accessKeyID := strings.Split(lower.Get("x-amz-credential"), "/")[0]

	target := *u
	target.Scheme, target.Host = v.sts.Scheme, v.sts.Host
	if p := strings.TrimSuffix(v.sts.Path, "/"); p != "" {
		target.Path = p + "/"
	}
	req, err := http.NewRequest(http.MethodGet, target.String(), nil)
	if err != nil {
		return nil, err
	}
	// The Host header stays the signed STS host: the signature covers it, and moto picks the
	// service (STS) by it.
	req.Host = u.Host
	if v.motoCompat {
		// moto routes a request to a service by its Authorization header (or body), never by a
		// presigned query, and takes the caller from that header's access key; so the same
		// credential and signature also go in header form. Real STS would refuse a request
		// with two signatures: --moto-compat=false against anything but moto.
		req.Header.Set("Authorization", fmt.Sprintf("AWS4-HMAC-SHA256 Credential=%s, SignedHeaders=%s, Signature=%s",
			lower.Get("x-amz-credential"), lower.Get("x-amz-signedheaders"), lower.Get("x-amz-signature")))
		req.Header.Set("X-Amz-Date", lower.Get("x-amz-date"))
	}
	req.Header.Set(clusterIDHeader, v.cluster)
	req.Header.Set("Accept", "application/json")
	resp, err := v.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("error during GET: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("error from AWS (expected 200, got %d). Body: %s", resp.StatusCode, body)
	}
	id := &identity{AccessKeyID: accessKeyID}
	var j struct {
		GetCallerIdentityResponse struct {
			GetCallerIdentityResult struct{ Account, Arn, UserId string }
		}
	}
	var x struct {
		Result struct{ Account, Arn, UserId string } `xml:"GetCallerIdentityResult"`
	}
	if json.Unmarshal(body, &j) == nil && j.GetCallerIdentityResponse.GetCallerIdentityResult.Arn != "" {
		r := j.GetCallerIdentityResponse.GetCallerIdentityResult
		id.ARN, id.Account, id.UserID = r.Arn, r.Account, r.UserId
	} else if xml.Unmarshal(body, &x) == nil && x.Result.Arn != "" {
		id.ARN, id.Account, id.UserID = x.Result.Arn, x.Result.Account, x.Result.UserId
	} else {
		return nil, fmt.Errorf("cannot read GetCallerIdentity answer: %.200s", body)
	}
	id.CanonicalARN, err = canonicalARN(id.ARN)
	return id, err
}

// canonicalARN maps arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION to
// arn:aws:iam::ACCOUNT:role/ROLE, as aws-iam-authenticator's arn.Canonicalize does.
func canonicalARN(a string) (string, error) {
	parts := strings.SplitN(a, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" {
		return "", fmt.Errorf("arn %q is invalid", a)
	}
	switch {
	case parts[2] == "iam":
		return a, nil
	case parts[2] == "sts" && strings.HasPrefix(parts[5], "assumed-role/"):
		res := strings.Split(parts[5], "/")
		if len(res) < 3 {
			return "", fmt.Errorf("assumed-role arn %q is invalid", a)
		}
		return fmt.Sprintf("arn:%s:iam::%s:role/%s", parts[1], parts[4], res[1]), nil
	case parts[2] == "sts" && strings.HasPrefix(parts[5], "federated-user/"):
		return a, nil
	case parts[2] == "sts" && strings.HasPrefix(parts[5], "user/"):
		// moto's identity for credentials it did not issue (arn:aws:sts::ACCOUNT:user/moto);
		// aws-iam-authenticator would refuse it, real STS never returns it.
		return a, nil
	}
	return "", fmt.Errorf("service %q in arn %q is not a valid service for identities", parts[2], a)
}

// checkSignature recomputes the SigV4 query signature of the presigned GET with the
// cluster-ID header set to cluster and compares it with X-Amz-Signature.
func checkSignature(u *url.URL, q url.Values, cluster, secret string) error {
	enc := func(s string) string {
		return strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
	}
	var keys []string
	for k := range q {
		if k != "X-Amz-Signature" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var cq []string
	for _, k := range keys {
		cq = append(cq, enc(k)+"="+enc(q.Get(k)))
	}
	signedHeaders := strings.Split(strings.ToLower(q.Get("X-Amz-SignedHeaders")), ";")
	var ch strings.Builder
	for _, h := range signedHeaders {
		switch h {
		case "host":
			ch.WriteString("host:" + u.Host + "\n")
		case clusterIDHeader:
			ch.WriteString(clusterIDHeader + ":" + cluster + "\n")
		default:
			return fmt.Errorf("cannot check a signature over header %q", h)
		}
	}
	empty := sha256.Sum256(nil)
	// The payload hash of a presigned GET: SDKs sign the empty body's hash (aws-sdk-go,
	// aws-sigv4); some sign UNSIGNED-PAYLOAD. Either is accepted.
	for _, payload := range []string{hex.EncodeToString(empty[:]), "UNSIGNED-PAYLOAD"} {
		creq := strings.Join([]string{"GET", "/", strings.Join(cq, "&"), ch.String(), strings.Join(signedHeaders, ";"), payload}, "\n")
		if ok, err := signatureMatches(creq, q, secret); err != nil || ok {
			return err
		}
	}
	return fmt.Errorf("signature does not match: token not signed for cluster %q with this key", cluster)
}

func signatureMatches(creq string, q url.Values, secret string) (bool, error) {
	cred := strings.SplitN(q.Get("X-Amz-Credential"), "/", 2)
	if len(cred) != 2 {
		return false, errors.New("malformed X-Amz-Credential")
	}
	scope := cred[1]
	sp := strings.Split(scope, "/")
	if len(sp) != 4 {
		return false, errors.New("malformed credential scope")
	}
	h := sha256.Sum256([]byte(creq))
	sts := strings.Join([]string{"AWS4-HMAC-SHA256", q.Get("X-Amz-Date"), scope, hex.EncodeToString(h[:])}, "\n")
	mac := func(key []byte, data string) []byte {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(data))
		return m.Sum(nil)
	}
	k := mac([]byte("AWS4"+secret), sp[0])
	k = mac(k, sp[1])
	k = mac(k, sp[2])
	k = mac(k, sp[3])
	want := hex.EncodeToString(mac(k, sts))
	return hmac.Equal([]byte(want), []byte(q.Get("X-Amz-Signature"))), nil
}

func runAuthn(ctx context.Context, args []string) error {
	fs := newFlags("authn")
	cluster := fs.String("cluster-name", "", "EKS cluster name the tokens must be signed for")
	stsEndpoint := fs.String("sts-endpoint", "", "STS endpoint the presigned GET is sent to (moto)")
	secret := fs.String("aws-secret-access-key", "", "if set, check the SigV4 signature locally with this key")
	motoCompat := fs.Bool("moto-compat", true, "also send the presigned credential as an Authorization header (moto needs it to route to STS)")
	cert := fs.String("cert", "", "serving certificate (PEM)")
	key := fs.String("key", "", "its key")
	addrFile := fs.String("addr-file", "", "file to write 127.0.0.1:PORT to")
	if err := fs.Parse(args); err != nil {
		return err
	}
	sts, err := url.Parse(*stsEndpoint)
	if err != nil || sts.Host == "" {
		return fmt.Errorf("--sts-endpoint %q: want a URL like http://127.0.0.1:5000", *stsEndpoint)
	}
	v := &verifier{cluster: *cluster, sts: sts, secretKey: *secret, motoCompat: *motoCompat, client: &http.Client{Timeout: 10 * time.Second}, now: time.Now}
	l, err := listenAndRecord(*addrFile)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/authenticate", func(w http.ResponseWriter, r *http.Request) {
		var review map[string]any
		var in struct {
			APIVersion string `json:"apiVersion"`
			Spec       struct {
				Token string `json:"token"`
			} `json:"spec"`
		}
		body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<10))
		if err := json.Unmarshal(body, &in); err != nil {
			http.Error(w, "expected a TokenReview", http.StatusBadRequest)
			return
		}
		status := map[string]any{"authenticated": false}
		id, err := v.verify(in.Spec.Token)
		if err != nil {
			log.Printf("token refused: %v", err)
			status["error"] = err.Error()
		} else {
			log.Printf("token accepted: %s", id.ARN)
			status = map[string]any{
				"authenticated": true,
				"user": map[string]any{
					"username": id.CanonicalARN,
					"uid":      "aws-iam-authenticator:" + id.Account + ":" + id.UserID,
					"groups":   []string{"system:masters", "system:authenticated"},
					"extra": map[string][]string{
						"arn":          {id.ARN},
						"canonicalArn": {id.CanonicalARN},
						"accessKeyId":  {id.AccessKeyID},
						"accountId":    {id.Account},
					},
				},
			}
		}
		apiVersion := in.APIVersion
		if apiVersion == "" {
			apiVersion = "authentication.k8s.io/v1"
		}
		review = map[string]any{"apiVersion": apiVersion, "kind": "TokenReview", "status": status}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(review)
	})
	kp, err := tls.LoadX509KeyPair(*cert, *key)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{kp}, MinVersion: tls.VersionTLS12}}
	go func() { <-ctx.Done(); srv.Close() }()
	if err := srv.ServeTLS(l, "", ""); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// runEKSToken prints an EKS bearer token for --cluster-name, presigned the way
// aws-iam-authenticator's generator does (GET sts.<region>.amazonaws.com/?Action=
// GetCallerIdentity&Version=2011-06-15, x-k8s-aws-id signed, X-Amz-Expires 60). For tests of
// the authenticator: --age makes a token signed that long ago.
func runEKSToken(_ context.Context, args []string) error {
	fs := newFlags("eks-token")
	cluster := fs.String("cluster-name", "", "cluster name (x-k8s-aws-id)")
	region := fs.String("region", "us-east-1", "AWS region")
	accessKey := fs.String("aws-access-key-id", "test", "access key id")
	secret := fs.String("aws-secret-access-key", "test", "secret access key")
	sessionToken := fs.String("aws-session-token", "", "session token, if any")
	age := fs.Duration("age", 0, "sign as if this long ago")
	if err := fs.Parse(args); err != nil {
		return err
	}
	now := time.Now().UTC().Add(-*age)
	date := now.Format("20060102T150405Z")
	scope := now.Format("20060102") + "/" + *region + "/sts/aws4_request"
	host := "sts." + *region + ".amazonaws.com"
	q := url.Values{}
	q.Set("Action", "GetCallerIdentity")
	q.Set("Version", "2011-06-15")
	q.Set("X-Amz-Algorithm", "AWS4-HMAC-SHA256")
	q.Set("X-Amz-Credential", *accessKey+"/"+scope)
	q.Set("X-Amz-Date", date)
	q.Set("X-Amz-Expires", "60")
	q.Set("X-Amz-SignedHeaders", "host;"+clusterIDHeader)
	if *sessionToken != "" {
		q.Set("X-Amz-Security-Token", *sessionToken)
	}
	enc := func(s string) string { return strings.ReplaceAll(url.QueryEscape(s), "+", "%20") }
	var keys []string
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var cq []string
	for _, k := range keys {
		cq = append(cq, enc(k)+"="+enc(q.Get(k)))
	}
	empty := sha256.Sum256(nil)
	creq := strings.Join([]string{"GET", "/", strings.Join(cq, "&"),
		"host:" + host + "\n" + clusterIDHeader + ":" + *cluster + "\n", "host;" + clusterIDHeader, hex.EncodeToString(empty[:])}, "\n")
	h := sha256.Sum256([]byte(creq))
	sts := strings.Join([]string{"AWS4-HMAC-SHA256", date, scope, hex.EncodeToString(h[:])}, "\n")
	mac := func(key []byte, data string) []byte {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(data))
		return m.Sum(nil)
	}
	k := mac([]byte("AWS4"+*secret), now.Format("20060102"))
	k = mac(k, *region)
	k = mac(k, "sts")
	k = mac(k, "aws4_request")
	u := "https://" + host + "/?" + strings.Join(cq, "&") + "&X-Amz-Signature=" + hex.EncodeToString(mac(k, sts))
	fmt.Println(tokenPrefix + base64.RawURLEncoding.EncodeToString([]byte(u)))
	return nil
}
