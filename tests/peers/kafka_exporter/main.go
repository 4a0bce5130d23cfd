// Stand-in for kafka_exporter 1.7.0's consumer-group series, for keyscope's peer tests.
//
// The Go module proxy serves no version of github.com/danielqsj/kafka_exporter
// to this project, so it cannot be built from a registry.  This program is our
// own: it asks Kafka the same questions with the same client library and
// versions as kafka_exporter 1.7.0 (Shopify/sarama v1.38.1, protocol version
// 2.0.0, ListGroups + DescribeGroups + OffsetFetch v1 for every partition of
// every topic, GetOffset(OffsetNewest)) and exposes the same series through
// the same prometheus/client_golang (v1.15.1), with the same rules for the
// values: -1 for a partition the group never committed in a topic it committed
// on, end - committed otherwise (negative when committed ahead), topics the
// group never committed on skipped.
package main

import (
	"flag"
	"log"
	"net/http"
	"strconv"
	"sync"

	"github.com/Shopify/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

var (
	lagDesc     = prometheus.NewDesc("kafka_consumergroup_lag", "Current Approximate Lag of a ConsumerGroup at Topic/Partition", []string{"consumergroup", "topic", "partition"}, nil)
	currentDesc = prometheus.NewDesc("kafka_consumergroup_current_offset", "Current Offset of a ConsumerGroup at Topic/Partition", []string{"consumergroup", "topic", "partition"}, nil)
	membersDesc = prometheus.NewDesc("kafka_consumergroup_members", "Amount of members in a consumer group", []string{"consumergroup"}, nil)
	endDesc     = prometheus.NewDesc("kafka_topic_partition_current_offset", "Current Offset of a Broker at Topic/Partition", []string{"topic", "partition"}, nil)
	partsDesc   = prometheus.NewDesc("kafka_topic_partitions", "Number of partitions for this Topic", []string{"topic"}, nil)
)

type exporter struct {
	client sarama.Client
	mu     sync.Mutex
}

func (e *exporter) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{lagDesc, currentDesc, membersDesc, endDesc, partsDesc} {
		ch <- d
	}
}

func (e *exporter) Collect(ch chan<- prometheus.Metric) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.client.RefreshMetadata(); err != nil {
		log.Printf("refresh metadata: %v", err)
	}
	topics, err := e.client.Topics()
	if err != nil {
		log.Printf("topics: %v", err)
		return
	}
	end := map[string]map[int32]int64{}
	for _, topic := range topics {
		parts, err := e.client.Partitions(topic)
		if err != nil {
			log.Printf("partitions of %s: %v", topic, err)
			continue
		}
		ch <- prometheus.MustNewConstMetric(partsDesc, prometheus.GaugeValue, float64(len(parts)), topic)
		end[topic] = map[int32]int64{}
		for _, p := range parts {
			o, err := e.client.GetOffset(topic, p, sarama.OffsetNewest)
			if err != nil {
				log.Printf("offset of %s/%d: %v", topic, p, err)
				continue
			}
			end[topic][p] = o
			ch <- prometheus.MustNewConstMetric(endDesc, prometheus.GaugeValue, float64(o), topic, strconv.Itoa(int(p)))
		}
	}
	for _, broker := range e.client.Brokers() {
		if err := broker.Open(e.client.Config()); err != nil && err != sarama.ErrAlreadyConnected {
			log.Printf("open broker %d: %v", broker.ID(), err)
			continue
		}
		groups, err := broker.ListGroups(&sarama.ListGroupsRequest{})
		if err != nil {
			log.Printf("list groups: %v", err)
			continue
		}
		ids := make([]string, 0, len(groups.Groups))
		for id := range groups.Groups {
			ids = append(ids, id)
		}
		described, err := broker.DescribeGroups(&sarama.DescribeGroupsRequest{Groups: ids})
		if err != nil {
			log.Printf("describe groups: %v", err)
			continue
		}
		for _, group := range described.Groups {
			req := sarama.OffsetFetchRequest{ConsumerGroup: group.GroupId, Version: 1}
			for topic, parts := range end {
				for p := range parts {
					req.AddPartition(topic, p)
				}
			}
			ch <- prometheus.MustNewConstMetric(membersDesc, prometheus.GaugeValue, float64(len(group.Members)), group.GroupId)
			resp, err := broker.FetchOffset(&req)
			if err != nil {
				log.Printf("offsets of %s: %v", group.GroupId, err)
				continue
			}
			for topic, parts := range resp.Blocks {
				consumed := false
				for _, b := range parts {
					if b.Offset != -1 {
						consumed = true
						break
					}
				}
				if !consumed {
					continue
				}
				for p, b := range parts {
					if b.Err != sarama.ErrNoError {
						continue
					}
					label := strconv.Itoa(int(p))
					ch <- prometheus.MustNewConstMetric(currentDesc, prometheus.GaugeValue, float64(b.Offset), group.GroupId, topic, label)
					if o, ok := end[topic][p]; ok {
						lag := int64(-1)
						if b.Offset != -1 {
							lag = o - b.Offset
						}
						ch <- prometheus.MustNewConstMetric(lagDesc, prometheus.GaugeValue, float64(lag), group.GroupId, topic, label)
					}
				}
			}
		}
	}
}

func main() {
	server := flag.String("kafka.server", "127.0.0.1:9092", "bootstrap server")
	listen := flag.String("web.listen-address", "127.0.0.1:9308", "where to serve /metrics")
	flag.String("refresh.metadata", "30s", "accepted for kafka_exporter's command line; metadata is refreshed every scrape")
	flag.Parse()
	config := sarama.NewConfig()
	config.ClientID = "kafka_exporter"
	config.Version = sarama.V2_0_0_0
	config.Metadata.AllowAutoTopicCreation = false
	client, err := sarama.NewClient([]string{*server}, config)
	if err != nil {
		log.Fatalf("connect to %s: %v", *server, err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(&exporter{client: client})
	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	log.Printf("listening on %s", *listen)
	log.Fatal(http.ListenAndServe(*listen, nil))
}
