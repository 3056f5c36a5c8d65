// A Go gRPC client of the Switchyard broker: grpc-go with stubs that
// protoc-gen-go and protoc-gen-go-grpc generate from
// proto/switchyard/v1/broker.proto (tests/go/build.sh), over the broker's
// Unix socket. tests/python/test_go_client.py runs it against a real broker
// and a real service of simulated devices.
//
// Usage: client SOCKET [HOST PORT FINGERPRINT USERNAME]
// (the password comes from $SWITCHYARD_PASSWORD, never from argv).
// Without a service it makes only the login-less call (Status). With one,
// it opens a session, connects to the service, lists its inventory, runs
// `show version` on the first device and prints what it saw as one JSON
// line on stdout. Any failure exits 1 with the gRPC error on stderr, as
// "grpc error: code=CODE MESSAGE".
//
// $SWITCHYARD_GO_AUTHORITY, when set, is passed to grpc.WithAuthority (the
// HTTP/2 :authority the client sends); unset, grpc-go's default is used,
// which for a unix: target is "localhost".
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	pb "switchyard.local/brokerpb"
)

type result struct {
	Version        string   `json:"version"`
	SessionsBefore int      `json:"sessions_before"`
	Attached       *bool    `json:"attached,omitempty"`
	ServiceName    string   `json:"service_name,omitempty"`
	Devices        []string `json:"devices,omitempty"`
	DeviceError    *string  `json:"device_error,omitempty"`
	Output         string   `json:"output,omitempty"`
	ExitStatus     *uint32  `json:"exit_status,omitempty"`
	Summary        string   `json:"summary,omitempty"`
	SessionsAfter  []bool   `json:"sessions_after,omitempty"`
	LinkConnects   []uint64 `json:"link_connects,omitempty"`
}

func main() {
	args := os.Args[1:]
	if len(args) != 1 && len(args) != 5 {
		fmt.Fprintln(os.Stderr, "usage: client SOCKET [HOST PORT FINGERPRINT USERNAME]")
		os.Exit(2)
	}
	out, err := run(args)
	if err != nil {
		if st, ok := status.FromError(err); ok {
			fmt.Fprintf(os.Stderr, "grpc error: code=%s %s\n", st.Code(), st.Message())
		} else {
			fmt.Fprintf(os.Stderr, "error: %v\n", err)
		}
		os.Exit(1)
	}
	line, err := json.Marshal(out)
	if err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		os.Exit(1)
	}
	fmt.Println(string(line))
}

func run(args []string) (*result, error) {
	// grpc-go sends "localhost" as the :authority of a unix: target, which
	// the broker's HTTP/2 stack accepts (it refuses a socket path there).
	opts := []grpc.DialOption{grpc.WithInsecure()}
	if authority, ok := os.LookupEnv("SWITCHYARD_GO_AUTHORITY"); ok {
		opts = append(opts, grpc.WithAuthority(authority))
	}
	conn, err := grpc.Dial("unix:"+args[0], opts...)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	broker := pb.NewBrokerClient(conn)

	bounded := func(seconds int) (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), time.Duration(seconds)*time.Second)
	}
	res := &result{}
	ctx, cancel := bounded(10)
	defer cancel()
	before, err := broker.Status(ctx, &pb.StatusRequest{})
	if err != nil {
		return nil, err
	}
	res.Version = before.GetVersion()
	res.SessionsBefore = len(before.GetSessions())
	if len(args) == 1 {
		return res, nil
	}
	host, fingerprint, username := args[1], args[3], args[4]
	port, err := strconv.ParseUint(args[2], 10, 16)
	if err != nil {
		return nil, fmt.Errorf("PORT %q: %v", args[2], err)
	}

	ctx, cancel = bounded(60)
	defer cancel()
	opened, err := broker.OpenSession(ctx, &pb.OpenSessionRequest{ClientName: "go"})
	if err != nil {
		return nil, err
	}
	sessionID := opened.GetSessionId()
	// The session lives as long as this stream is open; cancelling its
	// context at the end closes it.
	attachCtx, detach := context.WithCancel(context.Background())
	defer detach()
	attach, err := broker.Attach(attachCtx, &pb.AttachRequest{SessionId: sessionID})
	if err != nil {
		return nil, err
	}
	first, err := attach.Recv()
	if err != nil {
		return nil, err
	}
	attached := first.GetAttached().GetSessionId() == sessionID
	res.Attached = &attached

	service, err := broker.ServiceDirect(ctx, &pb.ServiceDirectRequest{
		SessionId:   sessionID,
		Username:    username,
		Host:        host,
		Port:        uint32(port),
		Password:    os.Getenv("SWITCHYARD_PASSWORD"),
		Fingerprint: fingerprint,
	})
	if err != nil {
		return nil, err
	}
	res.ServiceName = service.GetServiceName()
	ref := &pb.ServiceRef{SessionId: sessionID, ServiceId: service.GetServiceId()}

	inventory, err := broker.Inventory(ctx, &pb.InventoryRequest{Service: ref})
	if err != nil {
		return nil, err
	}
	for _, device := range inventory.GetDevices() {
		res.Devices = append(res.Devices, device.GetName())
	}
	if len(res.Devices) == 0 {
		return nil, fmt.Errorf("the service lists no devices")
	}

	stream, err := broker.Exec(ctx, &pb.ExecRequest{
		Service:  ref,
		Devices:  res.Devices[:1],
		Commands: []string{"show version"},
	})
	if err != nil {
		return nil, err
	}
	var output bytes.Buffer
	for {
		event, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		switch e := event.GetEvent().(type) {
		case *pb.ExecEvent_Output:
			output.Write(e.Output.GetData())
		case *pb.ExecEvent_DeviceResult:
			deviceError := e.DeviceResult.GetError()
			res.DeviceError = &deviceError
			for _, command := range e.DeviceResult.GetCommands() {
				output.Write(command.GetOutput())
				if command.ExitStatus != nil {
					exit := command.GetExitStatus()
					res.ExitStatus = &exit
				}
			}
		case *pb.ExecEvent_Summary:
			res.Summary = e.Summary.GetStatus().String()
		}
	}
	res.Output = output.String()

	after, err := broker.Status(ctx, &pb.StatusRequest{})
	if err != nil {
		return nil, err
	}
	for _, session := range after.GetSessions() {
		res.SessionsAfter = append(res.SessionsAfter, session.GetSessionId() == sessionID)
	}
	for _, link := range after.GetLinks() {
		res.LinkConnects = append(res.LinkConnects, link.GetConnects())
	}
	return res, nil
}
