#!/usr/bin/env bash
# Make sure the brokers the tests talk to are up on 127.0.0.1; start them if they are
# installed but stopped; otherwise fail saying how to fix it.
set -uo pipefail

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_up() {  # port seconds
    for _ in $(seq "$2"); do up "$1" && return 0; sleep 1; done
    return 1
}

if ! up 5672; then
    echo "RabbitMQ is not listening on 127.0.0.1:5672; starting it (rabbitmq-server -detached)" >&2
    if command -v rabbitmq-server >/dev/null; then
        rabbitmq-server -detached >/dev/null 2>&1 || true
    fi
    if ! wait_up 5672 90; then
        echo "RabbitMQ is still down. Fix: apt-get install rabbitmq-server && rabbitmq-server -detached" >&2
        exit 1
    fi
fi
# The AMQP port opens before the broker is fully booted: wait for the app.
if command -v rabbitmqctl >/dev/null; then
    timeout 60 rabbitmqctl await_startup >/dev/null 2>&1 || true
fi

if ! up 1883; then
    echo "Mosquitto is not listening on 127.0.0.1:1883; starting it" >&2
    if command -v mosquitto >/dev/null; then
        mosquitto -d -c /etc/mosquitto/mosquitto.conf >/dev/null 2>&1 || true
    fi
    if ! wait_up 1883 20; then
        echo "Mosquitto is still down. Fix: apt-get install mosquitto && mosquitto -d -c /etc/mosquitto/mosquitto.conf" >&2
        exit 1
    fi
fi
echo "services: RabbitMQ 127.0.0.1:5672 and Mosquitto 127.0.0.1:1883 are up" >&2
